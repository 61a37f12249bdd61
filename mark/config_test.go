package mark_test

import (
	"testing"

	"github.com/graylane/graylane/mark"
)

func TestCreateConfigDefaults(t *testing.T) {
	cfg := mark.CreateConfig()
	if cfg.Header != "X-Gray-Lane" {
		t.Fatalf("header %q", cfg.Header)
	}
}
