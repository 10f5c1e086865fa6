import { hostname } from 'node:os';
import { printable } from '../util/printable.ts';
import { PROGRAM } from '../version.ts';
import type { NotificationEvent } from './event.ts';

/**
 * What a notification says, the same facts in each target's form: a title and lines of text
 * (email), a JSON document (webhook), Slack's blocks. Every string from the event is made
 * printable and cut short: names may come from a repository, and a message from anywhere.
 */

/** Slack cuts a header at 150 characters and a field at 2000; mail clients show less. */
const MAX_TITLE = 140;
const MAX_VALUE = 1000;

/** The version of the webhook body's layout, for receivers that outlive a change to it. */
export const WEBHOOK_BODY_VERSION = 1;

const show = (text: string, max = MAX_VALUE) => printable(text, max);

/** "stdin mydb.dump on db1 (production)": what the event concerns, in a few words. */
function aboutWhat(event: NotificationEvent): string {
  const { kind, name, host, env, repository } = event.subject;
  const what = [kind, name].filter(Boolean).join(' ');
  const parts = [
    what,
    host ? `on ${host}` : '',
    env ? `(${env})` : '',
    !what && !host && repository ? repository : '',
  ].filter(Boolean);
  return parts.length ? parts.join(' ') : event.operation;
}

/** "strongbox: backup failed: postgres app on db1 (production)". */
export function titleOf(event: NotificationEvent): string {
  return show(`strongbox: ${event.event.replaceAll('-', ' ')}: ${aboutWhat(event)}`, MAX_TITLE);
}

/** The event's facts as label and value, in the order a reader wants them. */
export function factsOf(event: NotificationEvent): [string, string][] {
  const facts: [string, string | undefined][] = [
    ['Event', event.event],
    ['Operation', event.operation],
    ['Result', event.result],
    [
      'Error',
      event.error &&
        event.error.message +
          (event.error.exitCode === undefined ? '' : ` (exit code ${event.error.exitCode})`),
    ],
    ['Repository', event.subject.repository],
    ['Host', event.subject.host],
    ['Kind', event.subject.kind],
    ['Name', event.subject.name],
    ['Environment', event.subject.env],
    ['Snapshot', event.snapshot],
    ['Time', event.time.toISOString()],
    ['Duration', event.durationSeconds === undefined ? undefined : seconds(event.durationSeconds)],
    ...Object.entries(event.details ?? {}),
    ...Object.entries(event.figures ?? {}).map(([name, value]): [string, string] => [
      name,
      figure(name, value),
    ]),
  ];
  return facts
    .filter((fact): fact is [string, string] => fact[1] !== undefined && fact[1] !== '')
    .map(([label, value]) => [show(label, 100), show(value)]);
}

const integer = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

function seconds(value: number): string {
  return `${value.toFixed(value < 10 ? 2 : 1)} s`;
}

/** A figure with the unit its name ends in: size_bytes 1,234 bytes, rto_seconds 12.5 s. */
function figure(name: string, value: number): string {
  if (name.endsWith('_bytes')) return `${integer.format(value)} bytes`;
  if (name.endsWith('_seconds')) return seconds(value);
  return String(value);
}

/** The plain text of an email. */
export function textOf(event: NotificationEvent): string {
  const facts = factsOf(event);
  const width = Math.max(...facts.map(([label]) => label.length));
  return (
    `${titleOf(event)}\n\n` +
    facts.map(([label, value]) => `${`${label}:`.padEnd(width + 2)}${value}`).join('\n') +
    `\n\nSent by ${PROGRAM} on ${hostname()}.\n`
  );
}

/** The webhook's JSON document: the event as data, strings made printable. */
export function webhookBodyOf(event: NotificationEvent): Record<string, unknown> {
  const clean = (record: Record<string, string | undefined>) =>
    Object.fromEntries(
      Object.entries(record)
        .filter(([, value]) => value !== undefined)
        .map(([key, value]) => [show(key, 100), show(value!)]),
    );
  return {
    version: WEBHOOK_BODY_VERSION,
    event: event.event,
    title: titleOf(event),
    time: event.time.toISOString(),
    operation: show(event.operation),
    result: event.result,
    subject: clean({ ...event.subject }),
    ...(event.error
      ? {
          error: {
            message: show(event.error.message),
            ...(event.error.exitCode === undefined ? {} : { exitCode: event.error.exitCode }),
          },
        }
      : {}),
    ...(event.durationSeconds === undefined ? {} : { durationSeconds: event.durationSeconds }),
    ...(event.snapshot ? { snapshot: show(event.snapshot) } : {}),
    figures: Object.fromEntries(
      Object.entries(event.figures ?? {})
        .filter(([, value]) => Number.isFinite(value))
        .map(([key, value]) => [show(key, 100), value]),
    ),
    details: clean(event.details ?? {}),
    sender: { program: PROGRAM, host: show(hostname()) },
  };
}

/** Slack's mrkdwn gives <, > and & a meaning: `<!channel>` in a database name must not page anyone. */
function slackEscape(text: string): string {
  return text.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;');
}

/** Slack allows ten fields in a section. */
const MAX_SLACK_FIELDS = 10;

/** An incoming webhook's payload: `text` for notifications and old clients, blocks for the rest. */
export function slackPayloadOf(event: NotificationEvent): Record<string, unknown> {
  const title = titleOf(event);
  const fields = factsOf(event)
    .filter(([label]) => label !== 'Error' && label !== 'Event' && label !== 'Time')
    .slice(0, MAX_SLACK_FIELDS)
    .map(([label, value]) => ({ type: 'mrkdwn', text: `*${slackEscape(label)}*\n${slackEscape(value)}` }));
  const blocks: Record<string, unknown>[] = [
    { type: 'header', text: { type: 'plain_text', text: title } },
    { type: 'section', fields },
  ];
  if (event.error) {
    const message = slackEscape(show(event.error.message)).replaceAll('`', "'");
    blocks.push({ type: 'section', text: { type: 'mrkdwn', text: `\`\`\`${message}\`\`\`` } });
  }
  blocks.push({
    type: 'context',
    elements: [
      {
        type: 'mrkdwn',
        text: slackEscape(`${event.time.toISOString()} · ${PROGRAM} on ${show(hostname())}`),
      },
    ],
  });
  return { text: slackEscape(title), blocks };
}
