package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestRunExitCodes(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"help", []string{"--help"}, 0, "--config.file"},
		{"version", []string{"--version"}, 0, "tailguard, version"},
		{"unknown flag", []string{"--no-such-flag"}, 2, "unknown long flag"},
		{"bad log level", []string{"--log.level=loud"}, 2, "unrecognized log level"},
		{"missing config", []string{"--config.file=/nonexistent/tailguard.yml", "--web.listen-address=127.0.0.1:0"}, 1, "read config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(tc.args, &out, &errOut)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out.String(), errOut.String())
			}
			if !strings.Contains(out.String()+errOut.String(), tc.want) {
				t.Errorf("output lacks %q:\n%s%s", tc.want, out.String(), errOut.String())
			}
		})
	}
}
