import { ConfigError } from '../errors.ts';

/** A parser for commander of an option that takes a whole number of at least 1. */
export function positiveInteger(option: string): (value: string) => number {
  return (value) => {
    const number = Number(value);
    if (!Number.isInteger(number) || number < 1) {
      throw new ConfigError(`${option} ${value} is not a whole number of at least 1`);
    }
    return number;
  };
}

/** A parser for commander of an option that takes an ISO 8601 time (a date alone is midnight UTC). */
export function isoTime(option: string): (value: string) => Date {
  return (value) => {
    const time = new Date(value);
    if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(time.getTime()))
      throw new ConfigError(`${option} ${value} is not an ISO 8601 time such as 2026-11-20T14:30:00Z`);
    return time;
  };
}
