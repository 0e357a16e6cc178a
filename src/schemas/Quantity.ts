import { Either, ParseResult, Schema } from "effect";

const binarySuffixes: Record<string, bigint> = {
  Ki: 1n << 10n,
  Mi: 1n << 20n,
  Gi: 1n << 30n,
  Ti: 1n << 40n,
  Pi: 1n << 50n,
  Ei: 1n << 60n,
};
const decimalSuffixes: Record<string, number> = {
  n: -9,
  u: -6,
  m: -3,
  "": 0,
  k: 3,
  M: 6,
  G: 9,
  T: 12,
  P: 15,
  E: 18,
};

const grammar =
  /^([+-]?)(\d*)(?:\.(\d*))?(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?$/;

const pow10 = (n: number): bigint => 10n ** BigInt(n);
const ceilDiv = (a: bigint, b: bigint): bigint => (a >= 0n ? (a + b - 1n) / b : a / b);

/**
 * Parses a Kubernetes resource quantity ("10Gi", "1.5G", "500M", "1e3") into whole units, rounding
 * up as `resource.Quantity.Value()` does.
 */
export const parseQuantity = (text: string): Either.Either<bigint, string> => {
  const match = grammar.exec(text.trim());
  const [, sign = "", whole = "", fraction = "", exponent, suffix = ""] = match ?? [];
  if (!match || (whole === "" && fraction === "")) {
    return Either.left(
      `quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$', got "${text}"`,
    );
  }
  let numerator = BigInt(`${whole || "0"}${fraction}`);
  let denominator = pow10(fraction.length);
  if (binarySuffixes[suffix] !== undefined) {
    numerator *= binarySuffixes[suffix];
  } else {
    const scale = exponent ? Number(exponent.slice(1)) : (decimalSuffixes[suffix] ?? 0);
    if (Math.abs(scale) > 40) return Either.left(`quantity "${text}" is out of range`);
    if (scale >= 0) numerator *= pow10(scale);
    else denominator *= pow10(-scale);
  }
  const value = ceilDiv(numerator, denominator);
  return Either.right(sign === "-" ? -value : value);
};

const binaryUnits = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"] as const;

/** Formats bytes the way Kubernetes prints a BinarySI quantity: 5Gi, 100Ki, else plain bytes. */
export const formatBinarySI = (bytes: bigint): string => {
  let value = bytes;
  let unit = 0;
  while (value !== 0n && value % 1024n === 0n && unit < binaryUnits.length - 1) {
    value /= 1024n;
    unit += 1;
  }
  return `${value}${binaryUnits[unit]}`;
};

/** A quantity string decoded to bytes (or whole units). */
export const QuantityFromString = Schema.transformOrFail(Schema.String, Schema.BigIntFromSelf, {
  strict: true,
  decode: (text, _, ast) =>
    Either.match(parseQuantity(text), {
      onLeft: (message) => ParseResult.fail(new ParseResult.Type(ast, text, message)),
      onRight: ParseResult.succeed,
    }),
  encode: (bytes) => ParseResult.succeed(formatBinarySI(bytes)),
});
