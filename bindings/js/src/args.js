// Validation of arguments against the WIT types, before the component runs:
// a value out of range or of the wrong type throws UsageError (kind `usage`,
// the CLI's exit 2), so no call writes anything and then fails. The messages
// are the CLI's and the Python package's:
// `invalid value {shown} for {param}: {why}`.
import { inspect } from 'node:util';
import { UsageError } from './errors.js';

export const U64_MAX = 2n ** 64n - 1n;
export const U32_MAX = 2 ** 32 - 1;

/** A value as the message shows it: `'no'`, `5`, `5n`. */
export function shown(value) {
  return inspect(value, { depth: 0, breakLength: Infinity, maxStringLength: 80, maxArrayLength: 5 });
}

/** The type named in "got {type}". */
function typeName(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  return typeof value;
}

export function invalid(value, param, why) {
  return new UsageError(`invalid value ${shown(value)} for ${param}: ${why}`);
}

/** An integer in lo..=hi (bigints), given as a number or a bigint; as a bigint. */
export function integer(value, param, lo = 0n, hi = U64_MAX) {
  // A number must be an integer; one above 2**53 is taken as the integer it
  // holds, exactly (2**60 is 1152921504606846976).
  const ok = typeof value === 'bigint' || (typeof value === 'number' && Number.isInteger(value));
  if (!ok) throw invalid(value, param, `expected an integer in ${lo}..=${hi}, got ${typeName(value)}`);
  const big = BigInt(value);
  if (big < lo || big > hi) throw invalid(value, param, `${value} is not in ${lo}..=${hi}`);
  return big;
}

/** A u64 argument as the bigint jco expects. */
export function u64(value, param) {
  return integer(value, param);
}

/** `keep`: a u32 of at least 1, as a number. */
export function keep(value, param = 'keep') {
  return Number(integer(value, param, 1n, BigInt(U32_MAX)));
}

/**
 * A duration in milliseconds as the WIT's u64: a non-negative number (a
 * fraction rounds up) or bigint. At or above 2**64 ms, and Infinity, it
 * saturates to 2**64-1 ms, which the component takes as no limit; it never
 * wraps.
 */
export function ms(value, param) {
  if (typeof value === 'bigint' && value >= 0n) return value > U64_MAX ? U64_MAX : value;
  if (typeof value !== 'number' || !(value >= 0)) {
    throw invalid(value, param, `expected a non-negative number of milliseconds, got ${shown(value)}`);
  }
  if (value >= 2 ** 64) return U64_MAX;
  return BigInt(Math.ceil(value));
}

/** An optional duration: undefined or null is none. */
export function optionalMs(value, param) {
  return value === undefined || value === null ? undefined : ms(value, param);
}

export function bool(value, param) {
  if (typeof value !== 'boolean') throw invalid(value, param, `expected true or false, got ${typeName(value)}`);
  return value;
}

export function string(value, param) {
  if (typeof value !== 'string') throw invalid(value, param, `expected a string, got ${typeName(value)}`);
  return value;
}

/** A path: a non-empty string, or a file: URL. */
export function path(value, param) {
  if (value instanceof URL) {
    if (value.protocol !== 'file:') throw invalid(String(value), param, 'expected a string, got URL');
    return value;
  }
  if (string(value, param) === '') throw invalid(value, param, 'the path is empty');
  return value;
}

export function verify(value, param = 'verify') {
  if (value !== 'size' && value !== 'hash') throw invalid(value, param, "expected 'size' or 'hash'");
  return value;
}

/** The options object of a call: an object (or undefined) naming only known options. */
export function options(value, known, call) {
  if (value === undefined || value === null) return {};
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw invalid(value, 'options', `expected an object of options, got ${typeName(value)}`);
  }
  for (const name of Object.keys(value)) {
    if (!known.includes(name)) throw invalid(value[name], name, `${call} has no option ${name} (it has ${known.join(', ')})`);
  }
  return value;
}

/** Refuse arguments past the last one a function takes. */
export function noStray(args, count, call) {
  if (args.length > count && args.slice(count).some((a) => a !== undefined)) {
    const stray = args.slice(count).find((a) => a !== undefined);
    throw new UsageError(`unexpected argument ${shown(stray)}: ${call} takes ${count} arguments`);
  }
}
