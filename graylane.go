// Package graylane is graylane's entry in the Traefik plugin catalog. Traefik takes one plugin
// per module from the catalog, so this package serves both roles of graylane from one declared
// plugin: its configuration has a mark section, a dispatch section, or both. With both, a
// request is marked first and then dispatched.
package graylane

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/graylane/graylane/dispatch"
	"github.com/graylane/graylane/mark"
)

// Config is the configuration of the catalog plugin.
type Config struct {
	// Mark, when set, decides the request's lane; its fields are those of the mark plugin.
	Mark *mark.Config
	// Dispatch, when set, sends a request with a lane to that lane's servers; its fields are
	// those of the dispatch plugin.
	Dispatch *dispatch.Config
}

// CreateConfig returns an empty configuration: each section is off until it is written.
// A section takes the defaults of its plugin for every field it leaves out.
func CreateConfig() *Config {
	return &Config{}
}

// New builds the middleware chain the configuration asks for: mark, dispatch, or mark then dispatch.
func New(ctx context.Context, next http.Handler, config *Config, name string) (http.Handler, error) {
	if config == nil || config.Mark == nil && config.Dispatch == nil {
		return nil, errors.New("graylane: configure a mark section, a dispatch section, or both")
	}

	handler := next
	if config.Dispatch != nil {
		section, err := dispatchConfig(config)
		if err != nil {
			return nil, err
		}
		dispatcher, err := dispatch.New(ctx, handler, section, name)
		if err != nil {
			return nil, sectionError(ctx, config, name, err)
		}
		handler = dispatcher
	}
	if config.Mark != nil {
		marker, err := mark.New(ctx, handler, config.Mark, name)
		if err != nil {
			return nil, fmt.Errorf("mark.%w", err)
		}
		handler = marker
	}
	return handler, nil
}

// dispatchConfig returns the dispatch section of config, reading the lane header that the mark
// section writes: in one middleware, dispatch takes the lane mark chose, so a mark.header alone
// is enough, and a dispatch.header naming another header is an error (mark would strip and
// write one header while dispatch followed another, which any client could send).
func dispatchConfig(config *Config) (*dispatch.Config, error) {
	section := *config.Dispatch
	if config.Mark == nil {
		return &section, nil
	}
	header := config.Mark.Header
	if header == "" {
		header = mark.CreateConfig().Header
	}
	if section.Header == "" {
		section.Header = header
	} else if !strings.EqualFold(section.Header, header) {
		return nil, fmt.Errorf("dispatch.header: %q: not mark.header %q: in one middleware, dispatch reads the header mark writes (leave dispatch.header out)", section.Header, header)
	}
	return &section, nil
}

// sectionError returns the error of a dispatch section that New refused, err, as the error of
// the configuration: an error of the mark section comes first, since dispatch may have refused
// the lane header it takes from mark (which the user wrote as mark.header). Run only when the
// configuration is refused.
func sectionError(ctx context.Context, config *Config, name string, err error) error {
	if config.Mark != nil {
		if _, markErr := mark.New(ctx, http.NotFoundHandler(), config.Mark, name); markErr != nil {
			return fmt.Errorf("mark.%w", markErr)
		}
	}
	return fmt.Errorf("dispatch.%w", err)
}
