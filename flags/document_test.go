package flags

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestRoundTripKeepsUnknownMembers(t *testing.T) {
	v := newValidator(t)
	in := `{
  "$schema": "https://flagd.dev/schema/v0/flags.json",
  "$comment": {"owner": "payments"},
  "flags": {
    "f": {"state": "ENABLED", "variants": {"a": 1.50, "b": 2}, "defaultVariant": null, "x-owner": "team",
          "targeting": {"fractional": [["a", 1], ["b", 1]]}}
  },
  "metadata": {"version": "3", "tailguard.revision": 12}
}`
	d, err := v.Parse([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	out, err := Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "roundtrip.json", out)
	d2, err := v.Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	out2, _ := Marshal(d2)
	if string(out) != string(out2) {
		t.Errorf("second round trip differs:\n%s\n%s", out, out2)
	}
	if d2.Revision() != 12 || string(d2.Extra["$comment"]) != `{"owner":"payments"}` || string(d2.Flags["f"].Extra["x-owner"]) != `"team"` {
		t.Errorf("lost data: revision %d, extra %s, flag extra %s", d2.Revision(), d2.Extra, d2.Flags["f"].Extra)
	}
	// Number literals are kept as written.
	if got := string(d2.Flags["f"].Variants["a"]); got != "1.50" {
		t.Errorf("variant a = %s, want 1.50", got)
	}
}

func TestArrayFormIsWrittenAsMap(t *testing.T) {
	d, err := Decode([]byte(`{"$schema": "https://flagd.dev/schema/v0/flagd.json", "flags": [{"key": "f", "state": "ENABLED", "variants": {"a": true}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"$schema":"https://flagd.dev/schema/v0/flagd.json","flags":{"f":{"state":"ENABLED","variants":{"a":true}}}}`
	if string(out) != want {
		t.Errorf("got  %s\nwant %s", out, want)
	}
}

func TestCloneIsDeep(t *testing.T) {
	d, err := Decode([]byte(baseFile))
	if err != nil {
		t.Fatal(err)
	}
	c := d.Clone()
	if err := SetVariant("backoff-strategy", "decorrelated", false)(c); err != nil {
		t.Fatal(err)
	}
	c.Flags["new-checkout"].Variants["on"][0] = 'x'
	c.Metadata["flagSetId"] = "other"
	if *d.Flags["backoff-strategy"].DefaultVariant != "exponential" || string(d.Flags["new-checkout"].Variants["on"]) != "true" || d.Metadata["flagSetId"] != "shop" {
		t.Error("changing a clone changed the original")
	}
}

func TestRevision(t *testing.T) {
	tests := []struct {
		md   Metadata
		want int64
	}{
		{nil, 0},
		{Metadata{RevisionKey: int64(4)}, 4},
		{Metadata{RevisionKey: 5.0}, 5},
		{Metadata{RevisionKey: "6"}, 6},
		{Metadata{RevisionKey: 1.5}, 0},
		{Metadata{RevisionKey: true}, 0},
	}
	for _, tt := range tests {
		if got := (&Document{Metadata: tt.md}).Revision(); got != tt.want {
			t.Errorf("Revision(%v) = %d, want %d", tt.md, got, tt.want)
		}
	}
}

func TestRolloutWeights(t *testing.T) {
	tests := []struct {
		percent   float64
		v, r      int64
		wantError bool
	}{
		{25, 25, 75, false},
		{0, 0, 100, false},
		{100, 100, 0, false},
		{12.5, 1250, 8750, false},
		{0.01, 1, 9999, false},
		{33.333, 0, 0, true},
		{-1, 0, 0, true},
		{101, 0, 0, true},
	}
	for _, tt := range tests {
		v, r, err := RolloutWeights(tt.percent)
		if (err != nil) != tt.wantError || v != tt.v || r != tt.r {
			t.Errorf("RolloutWeights(%v) = %d, %d, %v", tt.percent, v, r, err)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("RolloutWeights(%v) error does not wrap ErrInvalid", tt.percent)
		}
	}
}

func TestRollout(t *testing.T) {
	base := func() *Document {
		d, err := Decode([]byte(baseFile))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	tests := []struct {
		name    string
		mutate  func(*Document) error
		summary string
		err     string
	}{
		{"against the default", Rollout("backoff-strategy", "decorrelated", "", 25), "fractional decorrelated=25% exponential=75%", ""},
		{"explicit rest", Rollout("backoff-strategy", "decorrelated", "full-jitter", 12.5), "fractional decorrelated=12.5% full-jitter=87.5%", ""},
		{"unknown variant", Rollout("backoff-strategy", "grpc", "", 25), "", `"grpc" is not a variant`},
		{"same variant", Rollout("backoff-strategy", "exponential", "", 25), "", "both"},
		{"unknown flag", Rollout("nope", "a", "", 25), "", "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := base()
			err := tt.mutate(d)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Errorf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := d.Flags["backoff-strategy"].TargetingSummary(); got != tt.summary {
				t.Errorf("summary %q, want %q", got, tt.summary)
			}
			if err := newValidator(t).Validate(d); err != nil {
				t.Errorf("rollout result invalid: %v", err)
			}
		})
	}
}

func TestTargetingSummary(t *testing.T) {
	tests := map[string]string{
		``:   "-",
		`{}`: "-",
		`{"fractional": [{"var": "email"}, ["a", 1], ["b", 3]]}`: "fractional a=25% b=75%",
		`{"fractional": [["a"], ["b"]]}`:                         "fractional a=50% b=50%",
		`{"fractional": [["a", {"var": "w"}], ["b", 1]]}`:        "fractional",
		`{"if": [true, "a"]}`:                                    "rule",
	}
	for in, want := range tests {
		f := &Flag{Targeting: json.RawMessage(in)}
		if got := f.TargetingSummary(); got != want {
			t.Errorf("TargetingSummary(%s) = %q, want %q", in, got, want)
		}
	}
}
