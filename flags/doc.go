// Package flags owns the write side of tailguard's feature flags: a flag
// file in flagd's flag-definition format, validated against flagd's JSON
// schemas plus semantic checks, written atomically with a revision and
// compare-and-swap, and a durable journal of every change that can be
// listed and rolled back.
//
// # Files
//
// Next to the flag file F the Store keeps F.journal.jsonl (one JSON object
// per change, see Entry) and F.lock (an empty file for flock). The file
// stays a plain flagd file: the revision lives in the flag-set metadata
// ("tailguard.revision"), which flagd and its in-process providers accept
// and pass through as evaluation metadata, so the same file can be served
// by a real flagd daemon or read by flagd providers in other languages.
//
// # Writing
//
// Store.Update takes an exclusive flock on F.lock (so writers in other
// processes and goroutines are serialised), re-reads and validates F,
// compares its revision with the one the caller read (a stale caller gets
// a ConflictError), refuses an idempotency key already journaled
// (DuplicateError), applies the mutation, validates the result, writes it
// to a temporary file in the same directory (fsync), appends the journal
// entry (fsync), renames the temporary file over F and fsyncs the
// directory. A crash before the rename leaves F untouched; the journaled
// entry for the revision F never reached is then marked aborted by the
// next writer and hidden from History.
//
// # Reading
//
// Validator.Parse reports every problem with the flag and field at fault,
// for example `flag "backoff-strategy": defaultVariant "x" is not a
// variant`. LastGood keeps serving the last valid version while the file
// is broken. Evaluation (the read side used by services) lives in the eval
// and provider sub-packages.
package flags
