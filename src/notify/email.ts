import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { rootCertificates } from 'node:tls';
import nodemailer from 'nodemailer';
import { printable } from '../util/printable.ts';
import { PROGRAM } from '../version.ts';
import { DeliveryError } from './delivery-error.ts';
import type { EmailTarget } from './schema.ts';

export interface EmailMessage {
  subject: string;
  text: string;
}

export interface SmtpCredentials {
  user: string;
  pass: string;
}

/** Errors that ended the connection rather than refused the message: worth another attempt. */
const TRANSIENT_CODES = new Set(['ECONNECTION', 'ETIMEDOUT', 'ESOCKET', 'EDNS']);

/** Whatever the server says, a certificate refused now is refused again in a second. */
const CERTIFICATE_CODE = /CERT|SELF_SIGNED|UNABLE_TO|HOSTNAME|ERR_TLS/;

/**
 * Sends one message over SMTP, on a connection of its own: TLS from the first byte (`secure`),
 * else STARTTLS, required unless the target says otherwise. Certificates are checked against the
 * system's authorities and those of `ca-file`.
 */
export async function sendEmail(
  target: EmailTarget,
  message: EmailMessage,
  credentials: SmtpCredentials | undefined,
  timeoutMs: number,
): Promise<void> {
  const extraAuthority = target.caFile ? await readAuthority(target.caFile) : undefined;
  const transport = nodemailer.createTransport({
    host: target.host,
    port: target.port,
    secure: target.secure,
    requireTLS: !target.secure && target.requireTls,
    ...(credentials ? { auth: credentials } : {}),
    tls: {
      minVersion: 'TLSv1.2',
      ...(extraAuthority ? { ca: [...rootCertificates, extraAuthority] } : {}),
    },
    name: hostname(),
    connectionTimeout: timeoutMs,
    greetingTimeout: timeoutMs,
    socketTimeout: timeoutMs,
    dnsTimeout: timeoutMs,
    // A message of ours names no file or URL to attach, and must not be made to.
    disableFileAccess: true,
    disableUrlAccess: true,
    logger: false,
  });
  try {
    await transport.sendMail({
      from: target.from,
      to: target.to,
      subject: message.subject,
      text: message.text,
      headers: { 'X-Mailer': PROGRAM },
    });
  } catch (error) {
    throw smtpFailure(error);
  } finally {
    transport.close();
  }
}

async function readAuthority(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    throw new DeliveryError(`cannot read the ca-file ${file}: ${code ?? 'unreadable'}`, false, { cause });
  }
}

interface SmtpError {
  code?: string;
  originalCode?: string;
  responseCode?: number;
  permanent?: boolean;
  message?: string;
}

function smtpFailure(error: unknown): DeliveryError {
  const failure = (error ?? {}) as SmtpError;
  const certificate = CERTIFICATE_CODE.test(failure.originalCode ?? '') || failure.code === 'ETLS';
  const transient =
    !certificate &&
    (failure.permanent === false || (failure.code !== undefined && TRANSIENT_CODES.has(failure.code)));
  const text = printable(String(failure.message ?? error).replace(/\s+/g, ' '), 300);
  return new DeliveryError(`SMTP: ${text}`, transient, { cause: error });
}
