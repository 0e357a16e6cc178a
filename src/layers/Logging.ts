import { Layer, Logger, LogLevel } from "effect";

/**
 * Logs go to stderr, one line per event, as logfmt text or JSON (`--logging-format`), with klog's
 * `-v` mapped onto levels: 0-3 info, 4 debug, 5 and above trace.
 */
export const layer = (options: { readonly v: number; readonly format: "text" | "json" }) =>
  Layer.mergeAll(
    Logger.replace(
      Logger.defaultLogger,
      Logger.withLeveledConsole(
        options.format === "json" ? Logger.jsonLogger : Logger.logfmtLogger,
      ),
    ),
    Logger.minimumLogLevel(
      options.v >= 5 ? LogLevel.Trace : options.v >= 4 ? LogLevel.Debug : LogLevel.Info,
    ),
  );
