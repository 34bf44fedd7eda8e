/**
 * How a command's body ends early: with an exit code and a message
 * (`runAction` in cmd/main.ts prints the message as the fatal line).
 * A module of its own so that commands loaded on demand (doctor) and the
 * CLI share them without loading each other.
 */

/** Raised inside actions to end with an exit code and a message. */
export class Exit extends Error {
  constructor(readonly code: number, message: string) {
    super(message);
  }
}

/** A bad flag value found after parsing (exit code 2). */
export class UsageError extends Error {}
