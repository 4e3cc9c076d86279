package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"-trials", "20", "-from", "90", "-to", "110", "-step", "10"}, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	for _, want := range []string{"Work: writes per trial", "Completion time", "At 100 clients, ours vs published", "FullJitter", "largest deviation"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestRunAddsThePublishedPoint(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"-trials", "20", "-from", "10", "-to", "20"}, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "At 100 clients") {
		t.Errorf("no comparison:\n%s", out.String())
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-step", "0"}, {"-from", "20", "-to", "10"}, {"-trials", "0"}, {"-nope"}} {
		var out bytes.Buffer
		if err := run(args, &out); err == nil {
			t.Errorf("run(%v) succeeded", args)
		}
	}
}

func TestRunFailsBeyondTolerance(t *testing.T) {
	var out bytes.Buffer
	err := run([]string{"-trials", "5", "-from", "100", "-to", "100", "-tolerance", "0.00001"}, &out)
	if err == nil || !strings.Contains(err.Error(), "exceeds the tolerance") {
		t.Errorf("run = %v, want a tolerance error", err)
	}
}
