package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/model"

	"github.com/tailguard/tailguard/flags"
)

// writeFlags are the flags every command that changes the file takes.
type writeFlags struct {
	reason         string
	incident       string
	idempotencyKey string
	ifRevision     int64
}

func addWriteFlags(cmd *kingpin.CmdClause) *writeFlags {
	w := &writeFlags{}
	cmd.Flag("reason", "Why the change is made (journaled).").Required().StringVar(&w.reason)
	cmd.Flag("incident", "Incident id the change belongs to (journaled).").StringVar(&w.incident)
	cmd.Flag("idempotency-key", "Apply the change only once: a retry with the same key is reported and skipped.").StringVar(&w.idempotencyKey)
	cmd.Flag("if-revision", "Apply only if the file is still at this revision (default: the revision just read).").
		Default("-1").Int64Var(&w.ifRevision)
	return w
}

func (w *writeFlags) meta(g *globalFlags, action string) flags.ChangeMeta {
	return flags.ChangeMeta{
		Actor:          g.actor,
		Action:         action,
		Incident:       w.incident,
		Reason:         w.reason,
		IdempotencyKey: w.idempotencyKey,
	}
}

// registerFlags adds the "flags" command group.
func registerFlags(app *kingpin.Application, g *globalFlags) commands {
	root := app.Command("flags", "Inspect and change feature flags.")
	cmds := commands{}

	root.Command("list", "List the flags.")
	cmds["flags list"] = func(ctx context.Context) error { return flagsList(ctx, g) }

	get := root.Command("get", "Show one flag.")
	getKey := get.Arg("key", "Flag key.").Required().String()
	cmds["flags get"] = func(ctx context.Context) error { return flagsGet(ctx, g, *getKey) }

	set := root.Command("set", "Serve one variant to everyone: make it the default and remove the targeting rule.")
	setKey := set.Arg("key", "Flag key.").Required().String()
	setVariant := set.Arg("variant", "Variant to serve.").Required().String()
	keep := set.Flag("keep-targeting", "Only change the default variant; keep the targeting rule.").Bool()
	setW := addWriteFlags(set)
	cmds["flags set"] = func(ctx context.Context) error {
		return flagsWrite(ctx, g, setW, flags.ActionSet, flags.SetVariant(*setKey, *setVariant, *keep))
	}

	enable := root.Command("enable", "Enable a flag.")
	enableKey := enable.Arg("key", "Flag key.").Required().String()
	enableW := addWriteFlags(enable)
	cmds["flags enable"] = func(ctx context.Context) error {
		return flagsWrite(ctx, g, enableW, flags.ActionEnable, flags.SetState(*enableKey, flags.StateEnabled))
	}

	disable := root.Command("disable", "Disable a flag (evaluations get the caller's default, reason DISABLED).")
	disableKey := disable.Arg("key", "Flag key.").Required().String()
	disableW := addWriteFlags(disable)
	cmds["flags disable"] = func(ctx context.Context) error {
		return flagsWrite(ctx, g, disableW, flags.ActionDisable, flags.SetState(*disableKey, flags.StateDisabled))
	}

	rollout := root.Command("rollout", "Serve a variant to a percentage of evaluations (by targeting key) with a fractional rule, replacing any targeting rule.")
	rolloutKey := rollout.Arg("key", "Flag key.").Required().String()
	rolloutVariant := rollout.Flag("variant", "Variant to roll out.").Required().String()
	rolloutPercent := rollout.Flag("percent", "Share of evaluations, 0-100 (up to two decimals).").Required().Float64()
	rolloutRest := rollout.Flag("rest", "Variant for the other evaluations (default: the default variant).").String()
	rolloutW := addWriteFlags(rollout)
	cmds["flags rollout"] = func(ctx context.Context) error {
		return flagsWrite(ctx, g, rolloutW, flags.ActionRollout, flags.Rollout(*rolloutKey, *rolloutVariant, *rolloutRest, *rolloutPercent))
	}

	history := root.Command("history", "Show the journal of changes, oldest first.")
	hKey := history.Arg("key", "Only changes to this flag.").String()
	hIncident := history.Flag("incident", "Only changes for this incident.").String()
	hActor := history.Flag("by", `Only changes by this actor ("controller", "operator:<name>").`).String()
	hSince := history.Flag("since", "Only changes at or after this time (RFC 3339, a date, or a duration ago such as 2h).").String()
	hLimit := history.Flag("limit", "Show at most the last N entries (0: all).").Default("0").Int()
	hAll := history.Flag("all", "Include writes that never reached the file (aborted) and the abort markers.").Bool()
	hChanges := history.Flag("changes", "Describe each change (text output).").Bool()
	cmds["flags history"] = func(ctx context.Context) error {
		since, err := parseTime(*hSince, g.now())
		if err != nil {
			return err
		}
		return flagsHistory(ctx, g, flags.HistoryFilter{Flag: *hKey, Incident: *hIncident, Actor: *hActor, Since: since, IncludeAborted: *hAll}, *hLimit, *hChanges)
	}

	rollback := root.Command("rollback", "Undo journaled changes, as a new journaled change. Choose one of --to, --incident, --since.")
	rbTo := rollback.Flag("to", "Restore this revision (undo every later change, by anyone).").Default("-1").Int64()
	rbIncident := rollback.Flag("incident", "Undo the controller's changes for this incident.").String()
	rbSince := rollback.Flag("since", "Undo the controller's changes at or after this time (RFC 3339, a date, or a duration ago such as 2h).").String()
	rbForce := rollback.Flag("force", "Undo even if an operator (or an edit outside the journal) changed the same flags later, overwriting that change.").Bool()
	rbDry := rollback.Flag("dry-run", "Show what would be undone; change nothing.").Bool()
	rbReason := rollback.Flag("reason", "Why the rollback is made (journaled).").Required().String()
	rbKey := rollback.Flag("idempotency-key", "Apply the rollback only once.").String()
	cmds["flags rollback"] = func(ctx context.Context) error {
		req := flags.RollbackRequest{
			Incident: *rbIncident,
			Force:    *rbForce,
			DryRun:   *rbDry,
			Meta:     flags.ChangeMeta{Actor: g.actor, Action: flags.ActionRollback, Reason: *rbReason, IdempotencyKey: *rbKey},
		}
		n := 0
		if *rbTo >= 0 {
			req.ToRevision = rbTo
			n++
		}
		if *rbIncident != "" {
			n++
		}
		if *rbSince != "" {
			t, err := parseTime(*rbSince, g.now())
			if err != nil {
				return err
			}
			req.Since = t
			n++
		}
		if n != 1 {
			return usagef("rollback: choose exactly one of --to, --incident and --since")
		}
		return flagsRollback(ctx, g, req)
	}

	validate := root.Command("validate", "Check a flag file against flagd's schema and tailguard's rules.")
	vFile := validate.Arg("file", "Flag file to check (default: --flag-file).").String()
	cmds["flags validate"] = func(ctx context.Context) error { return flagsValidate(ctx, g, *vFile) }

	return cmds
}

// parseTime accepts RFC 3339, a date (UTC midnight) or a Prometheus
// duration meaning that long before now.
func parseTime(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	if d, err := model.ParseDuration(s); err == nil {
		return now.Add(-time.Duration(d)), nil
	}
	return time.Time{}, usagef("time %q: want RFC 3339 (2026-03-01T12:00:00Z), a date (2026-03-01) or a duration ago (2h)", s)
}

func load(ctx context.Context, g *globalFlags) (*flags.Store, *flags.Snapshot, error) {
	s, err := g.store()
	if err != nil {
		return nil, nil, err
	}
	snap, err := s.Load(ctx)
	if err != nil {
		return nil, nil, err
	}
	return s, snap, nil
}

type flagSummary struct {
	Key            string         `json:"key"`
	State          flags.State    `json:"state"`
	DefaultVariant *string        `json:"defaultVariant"`
	Variants       []string       `json:"variants"`
	Targeting      string         `json:"targeting"`
	Metadata       flags.Metadata `json:"metadata,omitempty"`
}

func summarize(key string, f *flags.Flag) flagSummary {
	return flagSummary{
		Key:            key,
		State:          f.State,
		DefaultVariant: f.DefaultVariant,
		Variants:       f.VariantNames(),
		Targeting:      f.TargetingSummary(),
		Metadata:       f.Metadata,
	}
}

func flagsList(ctx context.Context, g *globalFlags) error {
	_, snap, err := load(ctx, g)
	if err != nil {
		return err
	}
	out := struct {
		Revision int64         `json:"revision"`
		Flags    []flagSummary `json:"flags"`
	}{Revision: snap.Revision, Flags: []flagSummary{}}
	for _, k := range snap.Doc.Keys() {
		out.Flags = append(out.Flags, summarize(k, snap.Doc.Flags[k]))
	}
	return g.print(out, func(w io.Writer) error {
		fmt.Fprintf(w, "revision %d\n", out.Revision)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KEY\tSTATE\tDEFAULT\tVARIANTS\tTARGETING")
		for _, f := range out.Flags {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", f.Key, f.State, orDash(f.DefaultVariant), strings.Join(f.Variants, ","), f.Targeting)
		}
		return tw.Flush()
	})
}

func orDash(s *string) string {
	if s == nil {
		return "-"
	}
	return *s
}

func flagsGet(ctx context.Context, g *globalFlags, key string) error {
	_, snap, err := load(ctx, g)
	if err != nil {
		return err
	}
	f, err := snap.Doc.Flag(key)
	if err != nil {
		return err
	}
	out := struct {
		Key      string      `json:"key"`
		Revision int64       `json:"revision"`
		Flag     *flags.Flag `json:"flag"`
	}{key, snap.Revision, f}
	return g.print(out, func(w io.Writer) error {
		s := summarize(key, f)
		fmt.Fprintf(w, "%s (revision %d)\n", key, snap.Revision)
		tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
		fmt.Fprintf(tw, "  state:\t%s\n", s.State)
		fmt.Fprintf(tw, "  default:\t%s\n", orDash(s.DefaultVariant))
		fmt.Fprintf(tw, "  variants:\t%s\n", variantList(f))
		fmt.Fprintf(tw, "  targeting:\t%s\n", s.Targeting)
		if len(f.Metadata) > 0 {
			var parts []string
			for _, k := range sortedKeys(f.Metadata) {
				parts = append(parts, fmt.Sprintf("%s=%v", k, f.Metadata[k]))
			}
			fmt.Fprintf(tw, "  metadata:\t%s\n", strings.Join(parts, " "))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if f.HasTargeting() {
			var buf bytes.Buffer
			if err := json.Indent(&buf, f.Targeting, "    ", "  "); err != nil {
				return err
			}
			fmt.Fprintf(w, "  rule:\n    %s\n", buf.String())
		}
		return nil
	})
}

func variantList(f *flags.Flag) string {
	var parts []string
	for _, name := range f.VariantNames() {
		parts = append(parts, name+"="+string(f.Variants[name]))
	}
	return strings.Join(parts, " ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// writeResult is the JSON output of a change.
type writeResult struct {
	Changed   bool         `json:"changed"`
	Duplicate bool         `json:"duplicate,omitempty"`
	Revision  int64        `json:"revision"`
	Entry     *flags.Entry `json:"entry,omitempty"`
}

func flagsWrite(ctx context.Context, g *globalFlags, w *writeFlags, action string, mutate func(*flags.Document) error) error {
	s, snap, err := load(ctx, g)
	if err != nil {
		return err
	}
	expected := snap.Revision
	if w.ifRevision >= 0 {
		expected = w.ifRevision
	}
	entry, err := s.Update(ctx, expected, mutate, w.meta(g, action))
	var dup *flags.DuplicateError
	switch {
	case errors.Is(err, flags.ErrNoChange):
		return g.print(writeResult{Revision: snap.Revision}, func(out io.Writer) error {
			_, err := fmt.Fprintf(out, "no change: the flag file already says so (revision %d)\n", snap.Revision)
			return err
		})
	case errors.As(err, &dup):
		return g.print(writeResult{Duplicate: true, Revision: snap.Revision, Entry: &dup.Entry}, func(out io.Writer) error {
			_, err := fmt.Fprintf(out, "already applied: idempotency key %q was used by journal entry %d (%s, revision %d); nothing changed\n",
				dup.Key, dup.Entry.Seq, dup.Entry.Actor, dup.Entry.RevisionAfter)
			return err
		})
	case err != nil:
		return err
	}
	return g.print(writeResult{Changed: true, Revision: entry.RevisionAfter, Entry: &entry}, func(out io.Writer) error {
		for _, c := range entry.Changes {
			for _, line := range describeChange(c) {
				fmt.Fprintln(out, line)
			}
		}
		_, err := fmt.Fprintf(out, "revision %d -> %d (journal entry %d)\n", entry.RevisionBefore, entry.RevisionAfter, entry.Seq)
		return err
	})
}

// describeChange renders a journaled change as lines such as
// `flag "x": default exponential -> decorrelated`.
func describeChange(c flags.Change) []string {
	switch c.Kind {
	case flags.KindEvaluator:
		return []string{fmt.Sprintf("evaluator %q: %s -> %s", c.Key, compactOrNone(c.Before), compactOrNone(c.After))}
	case flags.KindMetadata:
		return []string{fmt.Sprintf("flag-set metadata: %s -> %s", compactOrNone(c.Before), compactOrNone(c.After))}
	}
	name := fmt.Sprintf("flag %q", c.Key)
	before, errB := parseJournaled(c.Key, c.Before)
	after, errA := parseJournaled(c.Key, c.After)
	switch {
	case errB != nil || errA != nil:
		return []string{name + ": changed"}
	case before == nil:
		return []string{name + ": created"}
	case after == nil:
		return []string{name + ": deleted"}
	}
	var parts []string
	if before.State != after.State {
		parts = append(parts, fmt.Sprintf("state %s -> %s", before.State, after.State))
	}
	if orDash(before.DefaultVariant) != orDash(after.DefaultVariant) {
		parts = append(parts, fmt.Sprintf("default %s -> %s", orDash(before.DefaultVariant), orDash(after.DefaultVariant)))
	}
	if !bytes.Equal(before.Targeting, after.Targeting) {
		parts = append(parts, fmt.Sprintf("targeting %s -> %s", before.TargetingSummary(), after.TargetingSummary()))
	}
	if variantList(before) != variantList(after) {
		parts = append(parts, fmt.Sprintf("variants %s -> %s", variantList(before), variantList(after)))
	}
	if len(parts) == 0 {
		parts = append(parts, "metadata changed")
	}
	return []string{name + ": " + strings.Join(parts, ", ")}
}

func parseJournaled(key string, raw json.RawMessage) (*flags.Flag, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	return flags.ParseFlag(key, raw)
}

func compactOrNone(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return "(none)"
	}
	return string(raw)
}

func flagsHistory(ctx context.Context, g *globalFlags, filter flags.HistoryFilter, limit int, changes bool) error {
	s, err := g.store()
	if err != nil {
		return err
	}
	entries, err := s.History(ctx, filter)
	if err != nil {
		return err
	}
	if limit > 0 && len(entries) > limit {
		entries = entries[len(entries)-limit:]
	}
	type jsonEntry struct {
		flags.Entry
		Aborted bool `json:"aborted,omitempty"`
	}
	out := struct {
		Entries []jsonEntry `json:"entries"`
	}{Entries: []jsonEntry{}}
	for _, e := range entries {
		out.Entries = append(out.Entries, jsonEntry{e, e.Aborted})
	}
	return g.print(out, func(w io.Writer) error {
		if len(entries) == 0 {
			_, err := fmt.Fprintln(w, "no journal entries")
			return err
		}
		var table bytes.Buffer
		tw := tabwriter.NewWriter(&table, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tTIME\tACTOR\tACTION\tREVISION\tINCIDENT\tFLAGS\tREASON")
		for _, e := range entries {
			action := e.Action
			if e.Aborted {
				action += " (aborted)"
			}
			if len(e.RevertOf) > 0 {
				action += fmt.Sprintf(" of %s", joinInts(e.RevertOf))
			}
			flagList := strings.Join(e.Flags, ",")
			if flagList == "" {
				flagList = "-"
			}
			incident := e.Incident
			if incident == "" {
				incident = "-"
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d->%d\t%s\t%s\t%s\n", e.Seq, e.Time.UTC().Format(time.RFC3339), e.Actor, action,
				e.RevisionBefore, e.RevisionAfter, incident, flagList, e.Reason)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		// Interleave the change descriptions after the aligned rows.
		rows := strings.SplitAfter(table.String(), "\n")
		io.WriteString(w, rows[0])
		for i, e := range entries {
			io.WriteString(w, rows[i+1])
			if changes {
				for _, c := range e.Changes {
					for _, line := range describeChange(c) {
						fmt.Fprintf(w, "    %s\n", line)
					}
				}
			}
		}
		return nil
	})
}

func joinInts(ns []int64) string {
	parts := make([]string, len(ns))
	for i, n := range ns {
		parts[i] = fmt.Sprint(n)
	}
	return strings.Join(parts, ",")
}

func flagsRollback(ctx context.Context, g *globalFlags, req flags.RollbackRequest) error {
	s, err := g.store()
	if err != nil {
		return err
	}
	res, err := s.Rollback(ctx, req)
	var dup *flags.DuplicateError
	if errors.As(err, &dup) {
		return g.print(writeResult{Duplicate: true, Revision: dup.Entry.RevisionAfter, Entry: &dup.Entry}, func(out io.Writer) error {
			_, err := fmt.Fprintf(out, "already applied: idempotency key %q was used by journal entry %d; nothing changed\n", dup.Key, dup.Entry.Seq)
			return err
		})
	}
	if err != nil {
		var rc *flags.RollbackConflictError
		if errors.As(err, &rc) && !g.json() {
			fmt.Fprintln(g.stderr, "rollback refused: it would overwrite later changes:")
			for _, c := range rc.Conflicts {
				fmt.Fprintf(g.stderr, "  %s\n", c)
			}
			fmt.Fprintln(g.stderr, "Re-run with --force to undo anyway and overwrite them; nothing was changed.")
			return reportedError{err}
		}
		return err
	}
	undone := make([]int64, len(res.Undone))
	for i, e := range res.Undone {
		undone[i] = e.Seq
	}
	out := struct {
		DryRun bool        `json:"dryRun"`
		Undone []int64     `json:"undone"`
		Entry  flags.Entry `json:"entry"`
	}{req.DryRun, undone, res.Entry}
	return g.print(out, func(w io.Writer) error {
		verb := "undid"
		if req.DryRun {
			verb = "would undo"
		}
		for _, e := range res.Undone {
			incident := ""
			if e.Incident != "" {
				incident = ", " + e.Incident
			}
			fmt.Fprintf(w, "%s journal entry %d (%s%s: %q)\n", verb, e.Seq, e.Actor, incident, e.Reason)
		}
		for _, c := range res.Entry.Changes {
			for _, line := range describeChange(c) {
				fmt.Fprintln(w, line)
			}
		}
		if req.DryRun {
			_, err := fmt.Fprintln(w, "dry run: nothing written")
			return err
		}
		_, err := fmt.Fprintf(w, "revision %d -> %d (journal entry %d)\n", res.Entry.RevisionBefore, res.Entry.RevisionAfter, res.Entry.Seq)
		return err
	})
}

func flagsValidate(_ context.Context, g *globalFlags, file string) error {
	if file == "" {
		file = g.flagFile
	}
	if file == "" {
		return usagef("validate: name a file or set --flag-file")
	}
	v, err := flags.NewValidator()
	if err != nil {
		return err
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("read flag file: %w", err)
	}
	doc, verr := v.Parse(data)
	out := struct {
		File     string          `json:"file"`
		Valid    bool            `json:"valid"`
		Flags    int             `json:"flags,omitempty"`
		Revision int64           `json:"revision,omitempty"`
		Problems []flags.Problem `json:"problems,omitempty"`
	}{File: file, Valid: verr == nil}
	var ve *flags.ValidationError
	switch {
	case verr == nil:
		out.Flags, out.Revision = len(doc.Flags), doc.Revision()
	case errors.As(verr, &ve):
		out.Problems = ve.Problems
	default:
		return verr
	}
	err = g.print(out, func(w io.Writer) error {
		if out.Valid {
			_, err := fmt.Fprintf(w, "%s: valid (%d flags, revision %d)\n", file, out.Flags, out.Revision)
			return err
		}
		fmt.Fprintf(w, "%s: invalid\n", file)
		for _, p := range out.Problems {
			fmt.Fprintf(w, "  %s\n", p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if verr != nil {
		return reportedError{verr}
	}
	return nil
}
