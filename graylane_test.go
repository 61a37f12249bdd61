package graylane_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/graylane/graylane"
	"github.com/graylane/graylane/dispatch"
	"github.com/graylane/graylane/mark"
)

// answer writes who answered and the lane the request carried.
func answer(who string) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		_, _ = io.WriteString(rw, who+" "+req.Header.Get("X-Gray-Lane"))
	})
}

func markSection() *mark.Config {
	cfg := mark.CreateConfig()
	cfg.Identity.Header = "X-User-Id"
	cfg.Rules = []mark.Rule{{Name: "testers", Lane: "canary", Users: []string{"1001"}}}
	return cfg
}

func dispatchSection(url string) *dispatch.Config {
	cfg := dispatch.CreateConfig()
	cfg.Lanes = map[string]dispatch.Lane{"canary": {Servers: []dispatch.Server{{URL: url}}}}
	return cfg
}

// otherHeader returns both sections, mark writing the lane into X-Lane and dispatch's header
// set to dispatchHeader ("" = left out, as Traefik decodes a section without it).
func otherHeader(url, dispatchHeader string) *graylane.Config {
	cfg := &graylane.Config{Mark: markSection(), Dispatch: dispatchSection(url)}
	cfg.Mark.Header = "X-Lane"
	cfg.Dispatch.Header = dispatchHeader
	return cfg
}

func TestFacadeRoles(t *testing.T) {
	canary := httptest.NewServer(answer("canary"))
	defer canary.Close()

	tests := []struct {
		name    string
		config  *graylane.Config
		user    string
		lane    string
		want    string
		wantErr string
	}{
		{name: "no section", config: &graylane.Config{}, wantErr: "configure a mark section, a dispatch section, or both"},
		{name: "no configuration", config: nil, wantErr: "configure a mark section, a dispatch section, or both"},
		{name: "mark only, tester", config: &graylane.Config{Mark: markSection()}, user: "1001", want: "next canary"},
		{name: "mark only, other user", config: &graylane.Config{Mark: markSection()}, user: "2002", want: "next "},
		{name: "dispatch only, lane sent", config: &graylane.Config{Dispatch: dispatchSection(canary.URL)}, lane: "canary", want: "canary canary"},
		{name: "dispatch only, no lane", config: &graylane.Config{Dispatch: dispatchSection(canary.URL)}, want: "next "},
		{name: "both, tester", config: &graylane.Config{Mark: markSection(), Dispatch: dispatchSection(canary.URL)}, user: "1001", want: "canary canary"},
		{name: "both, other user", config: &graylane.Config{Mark: markSection(), Dispatch: dispatchSection(canary.URL)}, user: "2002", want: "next "},
		{name: "both, spoofed lane stripped", config: &graylane.Config{Mark: markSection(), Dispatch: dispatchSection(canary.URL)}, user: "2002", lane: "canary", want: "next "},
		{name: "empty sections take the defaults", config: &graylane.Config{Mark: &mark.Config{}, Dispatch: &dispatch.Config{}}, lane: "canary", want: "next "},
		// With both sections, dispatch reads the header mark writes, its own left out.
		{name: "both, mark's header, tester", config: otherHeader(canary.URL, ""), user: "1001", want: "canary "},
		{name: "both, mark's header, spoofed default header", config: otherHeader(canary.URL, ""), user: "2002", lane: "canary", want: "next canary"},
		{name: "both, dispatch's header the same", config: otherHeader(canary.URL, "x-lane"), user: "1001", want: "canary "},
		{name: "both, dispatch's header another", config: otherHeader(canary.URL, "X-Gray-Lane"), wantErr: `dispatch.header: "X-Gray-Lane": not mark.header "X-Lane"`},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			handler, err := graylane.New(context.Background(), answer("next"), test.config, "gray")
			if test.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), test.wantErr) {
					t.Fatalf("New error = %v, want one containing %q", err, test.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			req := httptest.NewRequest(http.MethodGet, "http://gray.test/", nil)
			if test.user != "" {
				req.Header.Set("X-User-Id", test.user)
			}
			if test.lane != "" {
				req.Header.Set("X-Gray-Lane", test.lane)
			}
			rec := httptest.NewRecorder()
			handler.ServeHTTP(rec, req)
			if got := rec.Body.String(); got != test.want {
				t.Fatalf("answered %q, want %q", got, test.want)
			}
		})
	}
}

func TestFacadeErrorsNameTheSection(t *testing.T) {
	badMark := markSection()
	badMark.Rules[0].Lane = "Bad Lane!"
	badDispatch := dispatchSection("ftp://nowhere")

	tests := []struct {
		name   string
		config *graylane.Config
		prefix string
	}{
		{name: "mark", config: &graylane.Config{Mark: badMark}, prefix: "mark.rules[0].lane"},
		// mark's header, which dispatch takes, is mark's error.
		{name: "mark header", config: &graylane.Config{Mark: &mark.Config{Header: "Bad Header"}, Dispatch: &dispatch.Config{}}, prefix: "mark.header"},
		{name: "dispatch", config: &graylane.Config{Dispatch: badDispatch}, prefix: "dispatch.lanes.canary.servers[0].url"},
		{name: "dispatch, mark right", config: &graylane.Config{Mark: markSection(), Dispatch: badDispatch}, prefix: "dispatch.lanes.canary.servers[0].url"},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			_, err := graylane.New(context.Background(), answer("next"), test.config, "gray")
			if err == nil || !strings.HasPrefix(err.Error(), test.prefix) {
				t.Fatalf("New error = %v, want one starting with %q", err, test.prefix)
			}
		})
	}
}
