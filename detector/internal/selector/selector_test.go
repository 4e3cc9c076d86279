package selector

import "testing"

func TestParse(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"{}", ""},
		{`{job="shop"}`, `job="shop"`},
		{`job="shop", endpoint=~"/c.*"`, `job="shop", endpoint=~"/c.*"`},
		{` {job="shop",} `, `job="shop"`},
	} {
		got, err := Parse(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{`{job=}`, `{job="a"`, `{__name__="x"}`, `up{job="a"}`, `{job="a"} or {b="c"}`} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	if got := With(`job="a"`, "", `le="1"`); got != `{job="a",le="1"}` {
		t.Errorf("With = %s", got)
	}
	if got := With(""); got != "" {
		t.Errorf("With() = %q", got)
	}
	if CheckExpr("sum(") == nil || CheckExpr("sum(up)") != nil {
		t.Error("CheckExpr")
	}
}
