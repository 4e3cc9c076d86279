// Resolves evaluation cases with @openfeature/flagd-core, flagd's
// JavaScript evaluator, for differential_test.go.
//
// Input (JSON on stdin): {"now": <unix seconds>, "files": [<flag file text>...],
//   "cases": [{"file": i, "flag": key, "type": "boolean"|"string"|"number"|"object",
//              "default": value, "context": {...}}...]}
// Output (JSON on stdout): {"files": [null | "<why flagd-core refused the file>"...],
//   "results": [{"value", "variant", "reason", "errorCode"}...]} in case order.
'use strict';
const { FlagdCore } = require('@openfeature/flagd-core');

const silent = { error() {}, warn() {}, info() {}, debug() {} };

function main(input) {
  const nowMs = input.now * 1000;
  Date.now = () => nowMs;
  const cores = input.files.map((text) => {
    const core = new FlagdCore(undefined, silent);
    try {
      core.setConfigurations(text);
      return { core };
    } catch (e) {
      return { refused: String((e && e.message) || e) };
    }
  });
  const results = input.cases.map((c) => {
    const { core, refused } = cores[c.file];
    if (!core) return { refused };
    const method = {
      boolean: 'resolveBooleanEvaluation',
      string: 'resolveStringEvaluation',
      number: 'resolveNumberEvaluation',
      object: 'resolveObjectEvaluation',
    }[c.type];
    try {
      const r = core[method](c.flag, c.default, c.context, silent);
      return { value: r.value, variant: r.variant, reason: r.reason, errorCode: r.errorCode };
    } catch (e) {
      return { thrown: String((e && e.message) || e) };
    }
  });
  return { files: cores.map((c) => c.refused || null), results };
}

let buf = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => (buf += d));
process.stdin.on('end', () => {
  process.stdout.write(JSON.stringify(main(JSON.parse(buf))));
});
