package dispatch

import "testing"

// TestServerKey checks the spellings of one server's URL that give one key (the health record
// and the sticky cookie value), with the one thing a black-box test cannot reach: a URL without a
// port (a server on port 80 or 443). An internal test, as the key shows only as a hash.
func TestServerKey(t *testing.T) {
	tests := []struct{ url, key string }{
		{"http://Canary", "http://canary:80"},
		{"http://canary:80/", "http://canary:80"},
		{"http://canary:/", "http://canary:80"},
		{"HTTPS://h", "https://h:443"},
		{"https://h:8443/Api/", "https://h:8443/Api/"},
		{"http://h/a%2fb", "http://h:80/a/b"},
		{"http://h/a%2Fb", "http://h:80/a/b"},
		{"http://h/%41pp/caf%c3%a9", "http://h:80/App/caf%C3%A9"},
		{"http://h/caf%C3%A9", "http://h:80/caf%C3%A9"},
		{"http://[FE80::1]", "http://[fe80::1]:80"},
		{"http://[FE80::1%25Eth0]:8080", "http://[fe80::1%Eth0]:8080"},
		{"http://10.0.0.5:8080", "http://10.0.0.5:8080"},
		{"http://canary:0080/", "http://canary:80"},
		{"https://h:00443/Api", "https://h:443/Api"},
	}
	for _, tt := range tests {
		u, err := parseServerURL(tt.url)
		if err != nil {
			t.Fatalf("%q: %v", tt.url, err)
		}
		if got := serverKey(u); got != tt.key {
			t.Errorf("serverKey(%q) = %q, want %q", tt.url, got, tt.key)
		}
	}
}
