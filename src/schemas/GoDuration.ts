import { Duration, Either, ParseResult, Schema } from "effect";

const unitMillis: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  μs: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/** Parses a duration in Go's `time.ParseDuration` syntax ("10s", "1m30s", "300ms", "1.5h", "0"). */
export const parseGoDuration = (text: string): Either.Either<Duration.Duration, string> => {
  const expected = `a duration such as 10s, 1m30s or 300ms, got "${text}"`;
  const sign = text.startsWith("-") ? -1 : 1;
  const body = text.replace(/^[+-]/, "");
  if (body === "0") return Either.right(Duration.zero);
  if (!/^((\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h))+$/.test(body)) return Either.left(expected);
  let millis = 0;
  for (const [, value, unit] of body.matchAll(/(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)/g)) {
    millis += Number(value) * (unitMillis[unit as string] ?? 0);
  }
  if (sign < 0) return Either.left(`a duration that is not negative, got "${text}"`);
  return Either.right(Duration.millis(millis));
};

/** Formats a duration the way Go prints one (1m30s, 10s, 500ms). */
export const formatGoDuration = (duration: Duration.Duration): string => {
  const millis = Duration.toMillis(duration);
  if (millis === 0) return "0s";
  if (millis < 1000) return `${millis}ms`;
  const hours = Math.floor(millis / 3_600_000);
  const minutes = Math.floor((millis % 3_600_000) / 60_000);
  const seconds = (millis % 60_000) / 1000;
  return `${hours ? `${hours}h` : ""}${hours || minutes ? `${minutes}m` : ""}${seconds}s`;
};

export const GoDurationFromString = Schema.transformOrFail(Schema.String, Schema.DurationFromSelf, {
  strict: true,
  decode: (text, _, ast) =>
    Either.match(parseGoDuration(text.trim()), {
      onLeft: (message) => ParseResult.fail(new ParseResult.Type(ast, text, message)),
      onRight: ParseResult.succeed,
    }),
  encode: (duration) => ParseResult.succeed(formatGoDuration(duration)),
});
