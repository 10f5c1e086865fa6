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
