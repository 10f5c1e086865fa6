/**
 * A notification that did not go through: what went wrong, in words that name no secret, and
 * whether trying again may help (a timeout, a 503) or not (a 404, a login refused).
 */
export class DeliveryError extends Error {
  constructor(
    message: string,
    readonly transient: boolean,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'DeliveryError';
  }
}
