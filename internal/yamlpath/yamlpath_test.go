package yamlpath

import (
	"strings"
	"testing"

	"github.com/prometheus/common/model"
)

type inner struct {
	Window model.Duration `yaml:"window"`
}

type doc struct {
	Interval model.Duration   `yaml:"interval"`
	Name     string           `yaml:"name"`
	Items    []inner          `yaml:"items"`
	ByName   map[string]inner `yaml:"by_name"`
	Embedded `yaml:",inline"`
}

type Embedded struct {
	Timeout model.Duration `yaml:"timeout"`
}

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"ok", "interval: 1m\nitems: [{window: 5m}]\n", ""},
		{"empty", "", ""},
		{"top", "interval: soon\n", "line 1: interval: not a valid duration"},
		{"slice", "name: x\nitems:\n  - window: 1m\n  - window: later\n", "line 4: items[1].window"},
		{"map", "by_name:\n  a: {window: never}\n", "line 2: by_name.a.window"},
		{"inline", "timeout: x\n", "line 1: timeout"},
		{"unknown", "intervall: 1m\n", "field intervall not found"},
		{"type", "items: 3\n", "line 1: cannot unmarshal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d doc
			err := Decode([]byte(tc.in), &d)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Decode = %v, want %q", err, tc.want)
			}
		})
	}
}
