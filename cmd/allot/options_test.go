package main

import (
	"net"
	"os"
	"testing"
)

func TestAdvertise(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Skip("no host name:", err)
	}
	for _, tc := range []struct {
		listen, external, want string
	}{
		{":8080", "", net.JoinHostPort(host, "8080")},
		// What a listener on ":8080" reports: dialling it reaches oneself.
		{"[::]:8080", "", net.JoinHostPort(host, "8080")},
		{"0.0.0.0:9090", "", net.JoinHostPort(host, "9090")},
		{"127.0.0.1:8080", "", "127.0.0.1:8080"},
		{"[::1]:8080", "", "[::1]:8080"},
		{"scraper-1:8080", "", "scraper-1:8080"},
		{"[::]:8080", "scraper.example:443", "scraper.example:443"},
		{"not an address", "", "not an address"},
	} {
		if got := advertise(tc.listen, tc.external); got != tc.want {
			t.Errorf("advertise(%q, %q) = %q, want %q", tc.listen, tc.external, got, tc.want)
		}
	}
}
