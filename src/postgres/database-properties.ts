import { SourceError } from '../errors.ts';
import { count } from '../util/plural.ts';
import { withDatabase } from './connection.ts';
import { commentOnDatabase, createDatabase, quoteIdentifier, quoteLiteral } from './queries.ts';
import { parseServerProperties } from './record-schema.ts';
import { readMark } from './restore/restore-names.ts';
import type { RestoreTarget } from './restore/target.ts';
import { psql, QueryError } from './tools.ts';
import { displayIdentifier, type Checker, type VerificationCheck } from './verify/verify.ts';

/**
 * A database's own properties, which pg_dump writes only with --create and pg_restore of an
 * archive into an existing database never restores: recorded at every backup, given to every
 * database a restore creates, and compared when it is verified.
 */
export interface DatabaseProperties {
  name: string;
  owner: string;
  /** coalesce(datacl, acldefault('d', datdba)): aclitems as text (`reader=c/app_owner`), sorted. */
  acl: string[];
  comment: string | null;
  encoding: string;
  collate: string;
  ctype: string;
  localeProvider: LocaleProvider;
  /** The provider's own locale: ICU's (daticulocale; datlocale from 17), or the builtin provider's; null for libc. */
  providerLocale: string | null;
  /** ICU's tailoring rules (daticurules, 16+). */
  icuRules: string | null;
  /** -1: no limit. */
  connectionLimit: number;
  tablespace: string;
  /** ALTER DATABASE … SET: pg_db_role_setting's "name=value" strings, in the server's order. */
  settings: string[];
  /** ALTER ROLE … IN DATABASE … SET, by role name. */
  roleSettings: Record<string, string[]>;
}

export type LocaleProvider = 'libc' | 'icu' | 'builtin';

/**
 * The properties of the database connected to, as one JSON object (DatabaseProperties). The
 * columns that only some versions have are read from the row as JSON, so one query serves them
 * all. pg_database is a shared catalog: a snapshot does not change what it says.
 */
export const DATABASE_PROPERTIES = `select json_build_object(
  'name', d.datname,
  'owner', pg_get_userbyid(d.datdba),
  'acl', array(select a::text from unnest(coalesce(d.datacl, acldefault('d', d.datdba))) a order by 1),
  'comment', shobj_description(d.oid, 'pg_database'),
  'encoding', pg_encoding_to_char(d.encoding),
  'collate', d.datcollate,
  'ctype', d.datctype,
  'localeProvider', case to_jsonb(d) ->> 'datlocprovider' when 'i' then 'icu' when 'b' then 'builtin' else 'libc' end,
  'providerLocale', coalesce(to_jsonb(d) ->> 'datlocale', to_jsonb(d) ->> 'daticulocale'),
  'icuRules', to_jsonb(d) ->> 'daticurules',
  'connectionLimit', d.datconnlimit,
  'tablespace', t.spcname,
  'settings', coalesce((select s.setconfig from pg_db_role_setting s where s.setdatabase = d.oid and s.setrole = 0), '{}'),
  'roleSettings', (select coalesce(json_object_agg(r.rolname, s.setconfig order by r.rolname), '{}')
    from pg_db_role_setting s join pg_roles r on r.oid = s.setrole where s.setdatabase = d.oid)
)
from pg_database d join pg_tablespace t on t.oid = d.dattablespace
where d.datname = current_database()`;

/** What a restore needs to create a database as `pg_dump --create` would. */
export interface DatabaseCreation {
  properties: DatabaseProperties;
  /** Whether the recorded tablespace is used: it exists on the target. */
  tablespace: boolean;
  serverMajor: number;
}

/** The first PostgreSQL version of each locale provider, and of ICU rules. */
const PROVIDER_SINCE: Record<LocaleProvider, number> = { libc: 0, icu: 15, builtin: 17 };
/** CREATE DATABASE's option for each provider's own locale. */
const PROVIDER_LOCALE_OPTION: Record<LocaleProvider, string | undefined> = {
  libc: undefined,
  icu: 'icu_locale',
  builtin: 'builtin_locale',
};
const ICU_RULES_SINCE = 16;
const LOCALE_PROVIDER_OPTION_SINCE = 15;

/**
 * How a restore creates the database recorded as `recorded` on `target` (none recorded: as
 * before, from template1), and what it cannot reproduce: a tablespace missing on the target
 * falls back to the default one, and is noted. A locale provider the server lacks is refused:
 * a database of another collation is not the one backed up.
 */
export async function creationFor(
  target: RestoreTarget,
  recorded: DatabaseProperties | undefined,
  label: string,
): Promise<{ creation?: DatabaseCreation; notes: string[] }> {
  if (!recorded) return { notes: [] };
  const major = target.tools.server.major;
  const needs = Math.max(
    PROVIDER_SINCE[recorded.localeProvider],
    recorded.icuRules === null ? 0 : ICU_RULES_SINCE,
  );
  if (major < needs) {
    throw new SourceError(
      `database ${displayIdentifier(label)} was backed up with ${recorded.icuRules === null ? `the ${recorded.localeProvider} locale provider` : 'ICU rules'}, which PostgreSQL ${major} lacks`,
      { hint: `Restore it on PostgreSQL ${needs} or later.` },
    );
  }
  if (recorded.tablespace === DEFAULT_TABLESPACE)
    return { creation: { properties: recorded, tablespace: false, serverMajor: major }, notes: [] };
  const exists = (await target.run(tablespaceExists(recorded.tablespace))).trim() === 't';
  return {
    creation: { properties: recorded, tablespace: exists, serverMajor: major },
    notes: exists
      ? []
      : [
          `database ${displayIdentifier(label)}: tablespace ${displayIdentifier(recorded.tablespace)} does not exist here; the database was created in the default tablespace`,
        ],
  };
}

const DEFAULT_TABLESPACE = 'pg_default';

function tablespaceExists(tablespace: string): string {
  return `select exists (select 1 from pg_tablespace where spcname = ${quoteLiteral(tablespace)})`;
}

/** CREATE DATABASE as `pg_dump --create` writes it: from template0, with the recorded encoding and locale. */
export function createDatabaseAs(database: string, creation: DatabaseCreation | undefined): string {
  if (!creation) return createDatabase(database);
  const { properties } = creation;
  const options = ['template = template0', `encoding = ${quoteLiteral(properties.encoding)}`];
  if (creation.serverMajor >= LOCALE_PROVIDER_OPTION_SINCE)
    options.push(`locale_provider = ${quoteLiteral(properties.localeProvider)}`);
  options.push(
    `lc_collate = ${quoteLiteral(properties.collate)}`,
    `lc_ctype = ${quoteLiteral(properties.ctype)}`,
  );
  const localeOption = PROVIDER_LOCALE_OPTION[properties.localeProvider];
  if (properties.providerLocale !== null && localeOption)
    options.push(`${localeOption} = ${quoteLiteral(properties.providerLocale)}`);
  if (properties.icuRules !== null) options.push(`icu_rules = ${quoteLiteral(properties.icuRules)}`);
  if (creation.tablespace) options.push(`tablespace = ${quoteIdentifier(properties.tablespace)}`);
  return `create database ${quoteIdentifier(database)} with ${options.join(' ')}`;
}

/**
 * SQLSTATEs of a CREATE DATABASE the server refuses for its encoding or locale: a locale it
 * does not have (42809, "invalid locale name"), one that does not fit the encoding (22023), an
 * encoding it does not know (42704).
 */
const LOCALE_REFUSED = new Set(['42809', '22023', '42704']);

/** The error a refused CREATE DATABASE … as backed up becomes: the record's locale named, and what to do. */
export function creationRefused(error: unknown, creation: DatabaseCreation | undefined): unknown {
  if (!creation || !(error instanceof QueryError) || !LOCALE_REFUSED.has(error.sqlState ?? '')) return error;
  return new SourceError(
    `database ${displayIdentifier(creation.properties.name)} cannot be created here as it was backed up (${describeLocale(creation.properties)}): ${error.message}`,
    {
      hint: 'Make that locale available on the target server (`locale -a` there lists them), or restore on a server that has it.',
      cause: error,
    },
  );
}

function describeLocale(properties: DatabaseProperties): string {
  return [
    `encoding ${properties.encoding}`,
    `locale provider ${properties.localeProvider}`,
    `collate ${properties.collate}`,
    `ctype ${properties.ctype}`,
    ...(properties.providerLocale === null
      ? []
      : [`${properties.localeProvider} locale ${properties.providerLocale}`]),
    ...(properties.icuRules === null ? [] : [`ICU rules ${properties.icuRules}`]),
  ].join(', ');
}

/** The properties set when a database is created, which a database that is reused keeps. */
const CREATION_FIELDS = [
  'encoding',
  'collate',
  'ctype',
  'localeProvider',
  'providerLocale',
  'icuRules',
] as const satisfies readonly (keyof DatabaseProperties)[];

/**
 * For a database a restore reuses rather than creates (the `postgres` database of a new
 * cluster): its encoding and locale stay as they are, which is noted when they differ from the
 * record, and the record to compare it with takes them.
 */
export async function reusedAsIs(
  target: RestoreTarget,
  database: string,
  recorded: DatabaseProperties | undefined,
): Promise<{ recorded?: DatabaseProperties; notes: string[] }> {
  if (!recorded) return { notes: [] };
  const found = parseServerProperties(
    JSON.parse(
      await psql(withDatabase(target.connection, database), target.tools.binDir, DATABASE_PROPERTIES),
    ),
    database,
  );
  const differing = CREATION_FIELDS.filter((field) => recorded[field] !== found[field]);
  if (differing.length === 0) return { recorded, notes: [] };
  const kept = Object.fromEntries(differing.map((field) => [field, found[field]]));
  const described = differing.map(
    (field) =>
      `${FIELD_NAMES[field]} ${String(found[field] ?? 'none')} (${String(recorded[field] ?? 'none')} backed up)`,
  );
  return {
    recorded: { ...recorded, ...kept },
    notes: [
      `database ${displayIdentifier(database)} was kept as the server had it, with ${described.join(', ')}: a database takes its encoding and locale when it is created`,
    ],
  };
}

const FIELD_NAMES: Record<(typeof CREATION_FIELDS)[number], string> = {
  encoding: 'encoding',
  collate: 'collate',
  ctype: 'ctype',
  localeProvider: 'locale provider',
  providerLocale: 'provider locale',
  icuRules: 'ICU rules',
};

/**
 * Gives a restored database the owner (unless `owners` is false), ACL, connection limit,
 * settings and role settings it was backed up with, and its comment when `comment` (a scratch
 * database gets it as it takes its name), in one transaction. What names a role the target
 * lacks is left out and noted. Returns the notes.
 */
export async function applyDatabaseProperties(
  target: RestoreTarget,
  database: string,
  recorded: DatabaseProperties | undefined,
  options: { owners: boolean; comment: boolean; label: string },
): Promise<string[]> {
  if (!recorded) return [];
  const label = `database ${displayIdentifier(options.label)}:`;
  const found = JSON.parse(await target.run(ownerAndRoles(database, rolesNamed(recorded)))) as {
    owner: string;
    aclIsDefault: boolean;
    roles: string[];
  };
  const present = new Set(found.roles);
  const notes: string[] = [];
  const statements: string[] = [];
  const on = quoteIdentifier(database);
  let owner = found.owner;
  if (options.owners) {
    if (present.has(recorded.owner)) {
      statements.push(`alter database ${on} owner to ${quoteIdentifier(recorded.owner)}`);
      owner = recorded.owner;
    } else
      notes.push(
        `${label} owner ${displayIdentifier(recorded.owner)} does not exist here; ${displayIdentifier(owner)} owns it`,
      );
  }
  const acl = recorded.acl.map(parseAclItem);
  // A new database has the default ACL of whoever owns it, as the recorded one may be.
  if (!(found.aclIsDefault && isDefaultAcl(acl, recorded.owner))) {
    statements.push(
      `revoke all on database ${on} from public`,
      `revoke all on database ${on} from ${quoteIdentifier(owner)}`,
      ...grantStatements(acl, {
        database: on,
        recordedOwner: recorded.owner,
        owner,
        grantors: options.owners,
        present,
        skipped: (item, role) =>
          notes.push(
            `${label} ${describeGrant(item)} left out: role ${displayIdentifier(role)} does not exist here`,
          ),
      }),
    );
  }
  if (recorded.connectionLimit !== -1)
    statements.push(`alter database ${on} connection limit ${recorded.connectionLimit}`);
  if (options.comment) statements.push(commentOnDatabase(database, recorded.comment));
  const setting = (prefix: string, item: string) => {
    const command = alterConfigCommand(prefix, item);
    if (command) statements.push(command);
    else notes.push(`${label} setting ${JSON.stringify(item)} left out: it is not name=value`);
  };
  for (const item of recorded.settings) setting(`alter database ${on}`, item);
  for (const [role, settings] of Object.entries(recorded.roleSettings)) {
    if (!present.has(role)) {
      notes.push(
        `${label} settings for role ${displayIdentifier(role)} left out: the role does not exist here`,
      );
      continue;
    }
    for (const item of settings) setting(`alter role ${quoteIdentifier(role)} in database ${on}`, item);
  }
  if (statements.length === 0) return notes;
  try {
    await target.run(['begin', ...statements, 'commit'].join(';\n'));
  } catch (error) {
    if (!(error instanceof QueryError)) throw error;
    throw new SourceError(
      `cannot give ${displayIdentifier(options.label)} the owner, privileges and settings it was backed up with: ${error.message}`,
      {
        hint: 'Restore as a role that may set them (a superuser may set them all).',
        cause: error,
      },
    );
  }
  return notes;
}

/** Every role the record names: owner, grantees and grantors, roles with settings. */
function rolesNamed(recorded: DatabaseProperties): string[] {
  const names = new Set([recorded.owner, ...Object.keys(recorded.roleSettings)]);
  for (const item of recorded.acl.map(parseAclItem)) {
    if (item.grantee !== '') names.add(item.grantee);
    names.add(item.grantor);
  }
  return [...names];
}

/** `database`'s owner, whether its ACL is the default one, and which of `roles` exist, as JSON. */
function ownerAndRoles(database: string, roles: readonly string[]): string {
  return `select json_build_object(
    'owner', (select pg_get_userbyid(datdba) from pg_database where datname = ${quoteLiteral(database)}),
    'aclIsDefault', (select datacl is null from pg_database where datname = ${quoteLiteral(database)}),
    'roles', ${existingRoles(roles)})`;
}

function existingRoles(roles: readonly string[]): string {
  return `(select coalesce(json_agg(rolname order by rolname), '[]') from pg_roles
    where rolname = any (array[${roles.map(quoteLiteral).join(', ')}]::text[]))`;
}

/** One aclitem: `grantee=privileges/grantor`, PUBLIC as an empty grantee. */
export interface AclItem {
  grantee: string;
  privileges: { privilege: DatabasePrivilege; grantable: boolean }[];
  grantor: string;
}

type DatabasePrivilege = 'CREATE' | 'TEMPORARY' | 'CONNECT';

/** aclitem letters of a database's privileges (PostgreSQL's ACL_*_CHR). */
const PRIVILEGE_LETTERS: Record<string, DatabasePrivilege> = { C: 'CREATE', T: 'TEMPORARY', c: 'CONNECT' };

/**
 * Reads an aclitem as PostgreSQL writes it (aclitemout): names double-quoted, with "" for a
 * quote, when they hold anything but letters, digits and underscores; a '*' after a privilege's
 * letter for its grant option.
 */
export function parseAclItem(text: string): AclItem {
  let at = 0;
  const name = (end: string): string => {
    if (text[at] !== '"') {
      const stop = end === '' ? text.length : text.indexOf(end, at);
      if (stop < 0) throw malformed(`ACL item ${text}`);
      const plain = text.slice(at, stop);
      at = stop;
      return plain;
    }
    let quoted = '';
    for (at++; ; at++) {
      if (at >= text.length) throw malformed(`ACL item ${text}`);
      if (text[at] === '"' && text[at + 1] === '"') quoted += text[at++];
      else if (text[at] === '"') break;
      else quoted += text[at];
    }
    at++;
    return quoted;
  };
  const grantee = name('=');
  if (text[at] !== '=') throw malformed(`ACL item ${text}`);
  const slash = text.indexOf('/', ++at);
  if (slash < 0) throw malformed(`ACL item ${text}`);
  const letters = text.slice(at, slash);
  at = slash + 1;
  const grantor = name('');
  if (at !== text.length) throw malformed(`ACL item ${text}`);
  const privileges: AclItem['privileges'] = [];
  for (let i = 0; i < letters.length; i++) {
    const privilege = PRIVILEGE_LETTERS[letters[i]!];
    if (!privilege) throw malformed(`ACL item ${text}`);
    const grantable = letters[i + 1] === '*';
    if (grantable) i++;
    privileges.push({ privilege, grantable });
  }
  return { grantee, privileges, grantor };
}

/** acldefault('d', owner): PUBLIC may connect and create temporary tables, the owner may do all. */
function isDefaultAcl(acl: readonly AclItem[], owner: string): boolean {
  const shown = acl.map((item) => `${item.grantee}=${letters(item)}/${item.grantor}`).sort();
  const expected = [`=TEMPORARY,CONNECT/${owner}`, `${owner}=CREATE,TEMPORARY,CONNECT/${owner}`].sort();
  return shown.length === expected.length && shown.every((item, i) => item === expected[i]);
}

function letters(item: AclItem): string {
  return item.privileges.map((p) => `${p.privilege}${p.grantable ? '*' : ''}`).join(',');
}

function describeGrant(item: AclItem): string {
  return `${item.privileges.map((p) => p.privilege).join(', ')} for ${displayGrantee(item.grantee)}`;
}

function displayGrantee(grantee: string): string {
  return grantee === '' ? 'PUBLIC' : displayIdentifier(grantee);
}

/**
 * The GRANTs that rebuild `acl`, the recorded owner's grants given to `owner`. With `grantors`,
 * each is made by its grantor, as pg_dump does: the owner's first, then those of roles as they
 * receive the grant option (any left, whose grantor never does, last). An item naming a role not
 * `present` is `skipped`.
 */
function grantStatements(
  acl: readonly AclItem[],
  context: {
    database: string;
    recordedOwner: string;
    owner: string;
    grantors: boolean;
    present: ReadonlySet<string>;
    skipped: (item: AclItem, role: string) => void;
  },
): string[] {
  const { recordedOwner, owner, grantors, present } = context;
  const asOwner = (role: string) => (role === recordedOwner ? owner : role);
  const wanted = acl.filter((item) => {
    const missing = [item.grantee, ...(grantors ? [item.grantor] : [])]
      .map(asOwner)
      .find((role) => role !== '' && !present.has(role) && role !== owner);
    if (missing !== undefined) context.skipped(item, missing);
    return missing === undefined;
  });
  const ordered: AclItem[] = [];
  const mayGrant = new Set([owner]);
  let pending = wanted;
  while (pending.length > 0) {
    const ready = pending.filter((item) => !grantors || mayGrant.has(asOwner(item.grantor)));
    if (ready.length === 0) break;
    ordered.push(...ready);
    for (const item of ready)
      if (item.privileges.some((p) => p.grantable)) mayGrant.add(asOwner(item.grantee));
    pending = pending.filter((item) => !ready.includes(item));
  }
  ordered.push(...pending);
  const statements: string[] = [];
  for (const item of ordered) {
    const grantee = item.grantee === '' ? 'public' : quoteIdentifier(asOwner(item.grantee));
    const grant = (privileges: AclItem['privileges'], option: string) =>
      privileges.length === 0
        ? []
        : [
            `grant ${privileges.map((p) => p.privilege.toLowerCase()).join(', ')} on database ${context.database} to ${grantee}${option}`,
          ];
    const grants = [
      ...grant(
        item.privileges.filter((p) => !p.grantable),
        '',
      ),
      ...grant(
        item.privileges.filter((p) => p.grantable),
        ' with grant option',
      ),
    ];
    const grantor = asOwner(item.grantor);
    if (grantors && grantor !== owner)
      statements.push(`set role ${quoteIdentifier(grantor)}`, ...grants, 'reset role');
    else statements.push(...grants);
  }
  return statements;
}

/**
 * Settings whose values the server keeps as a list of double-quoted names (GUC_LIST_QUOTE), as
 * pg_dump's variable_is_guc_list_quote knows them.
 */
const GUC_LIST_QUOTE = new Set([
  'local_preload_libraries',
  'search_path',
  'session_preload_libraries',
  'shared_preload_libraries',
  'temp_tablespaces',
  'unix_socket_directories',
]);

/**
 * `<prefix> set <name> to <value>` for a "name=value" of pg_db_role_setting, as pg_dump's
 * makeAlterConfigCommand writes it: a list setting's elements each as a literal (one literal of
 * the whole would be quoted once more), any other value as one literal. Undefined without "=".
 */
export function alterConfigCommand(prefix: string, item: string): string | undefined {
  const at = item.indexOf('=');
  if (at < 0) return undefined;
  const name = item.slice(0, at);
  const value = item.slice(at + 1);
  const split = GUC_LIST_QUOTE.has(name.toLowerCase()) ? splitGucList(value) : undefined;
  const values = split?.length ? split : [value];
  return `${prefix} set ${quoteIdentifier(name)} to ${values.map(quoteLiteral).join(', ')}`;
}

/**
 * A list setting's value split as pg_dump's SplitGUCList does: comma-separated elements,
 * whitespace around them dropped, an element in double quotes taken as it is with "" for a
 * quote (an unquoted one is not folded to lower case). Undefined when it is not such a list.
 */
export function splitGucList(value: string): string[] | undefined {
  const elements: string[] = [];
  let at = 0;
  const skipSpace = () => {
    while (at < value.length && /\s/.test(value[at]!)) at++;
  };
  skipSpace();
  if (at === value.length) return elements;
  for (;;) {
    let element = '';
    if (value[at] === '"') {
      for (at++; ; at++) {
        if (at >= value.length) return undefined;
        if (value[at] === '"' && value[at + 1] === '"') element += value[at++];
        else if (value[at] === '"') break;
        else element += value[at];
      }
      at++;
    } else {
      const start = at;
      while (at < value.length && value[at] !== ',' && !/\s/.test(value[at]!)) at++;
      if (at === start) return undefined;
      element = value.slice(start, at);
    }
    elements.push(element);
    skipSpace();
    if (at === value.length) return elements;
    if (value[at] !== ',') return undefined;
    at++;
    skipSpace();
  }
}

function malformed(what: string): SourceError {
  return new SourceError(`the snapshot's record of the database is not understood: ${what}`);
}

/**
 * Compares the verified database's properties with those recorded: owner (when `owners`), ACL
 * (without `owners`, the owner's grants as the owner's whoever it is, and without grantors),
 * comment, encoding and locale, connection limit, settings and role settings. A differing
 * tablespace, and what names a role the server lacks, are notes.
 */
export function databaseChecker(recorded: DatabaseProperties, expect: { owners: boolean }): Checker {
  return async (target) => {
    const answer = JSON.parse(
      await psql(
        target.connection,
        target.tools.binDir,
        `select json_build_object('database', (${DATABASE_PROPERTIES}), 'roles', ${existingRoles(rolesNamed(recorded))})`,
      ),
    ) as { database: unknown; roles: string[] };
    const found = parseServerProperties(answer.database, target.database);
    return compareDatabaseProperties(recorded, found, new Set(answer.roles), expect);
  };
}

export function compareDatabaseProperties(
  recorded: DatabaseProperties,
  found: DatabaseProperties,
  present: ReadonlySet<string>,
  expect: { owners: boolean },
): VerificationCheck {
  const label = `database ${displayIdentifier(recorded.name)}:`;
  const differences: string[] = [];
  const notes: string[] = [];
  let compared = 0;
  const compare = (what: string, backedUp: string | number | null, now: string | number | null) => {
    compared++;
    if (backedUp !== now)
      differences.push(
        `${label} ${what} ${String(backedUp ?? 'none')} backed up, ${String(now ?? 'none')} found`,
      );
  };
  if (expect.owners) compare('owner', displayIdentifier(recorded.owner), displayIdentifier(found.owner));
  compared++;
  differences.push(...aclDifferences(recorded, found, present, expect.owners, label, notes));
  // A restore's scratch database carries strongbox's mark until it takes its name, and with it
  // the recorded comment (queries.ts, moveIntoPlace and swapDatabases).
  if (readMark(found.comment)?.kind !== 'scratch') {
    compared++;
    if (recorded.comment !== found.comment)
      differences.push(`${label} comment ${describeComment(recorded.comment, found.comment)}`);
  }
  compare('encoding', recorded.encoding, found.encoding);
  compare('collate', recorded.collate, found.collate);
  compare('ctype', recorded.ctype, found.ctype);
  compare('locale provider', recorded.localeProvider, found.localeProvider);
  compare(`${recorded.localeProvider} locale`, recorded.providerLocale, found.providerLocale);
  compare('ICU rules', recorded.icuRules, found.icuRules);
  compare('connection limit', recorded.connectionLimit, found.connectionLimit);
  if (recorded.tablespace !== found.tablespace)
    notes.push(
      `${label} tablespace ${displayIdentifier(recorded.tablespace)} backed up, ${displayIdentifier(found.tablespace)} found`,
    );
  compared += recorded.settings.length;
  differences.push(...settingDifferences(recorded.settings, found.settings, `${label} setting`, ''));
  for (const role of new Set([...Object.keys(recorded.roleSettings), ...Object.keys(found.roleSettings)])) {
    const backedUp = recorded.roleSettings[role] ?? [];
    if (backedUp.length > 0 && !present.has(role)) {
      notes.push(
        `${label} settings for role ${displayIdentifier(role)} not compared: the role does not exist here`,
      );
      continue;
    }
    compared += backedUp.length;
    differences.push(
      ...settingDifferences(
        backedUp,
        found.roleSettings[role] ?? [],
        `${label} setting`,
        ` for role ${displayIdentifier(role)}`,
      ),
    );
  }
  return { name: 'database', compared: count(compared, 'property', 'properties'), differences, notes };
}

/** Comments shown when short enough to read in a line. */
const SHOWN_COMMENT = 60;

function describeComment(backedUp: string | null, now: string | null): string {
  const show = (comment: string | null) => (comment === null ? 'none' : JSON.stringify(comment));
  if ((backedUp ?? '').length > SHOWN_COMMENT || (now ?? '').length > SHOWN_COMMENT) return 'differs';
  return `${show(backedUp)} backed up, ${show(now)} found`;
}

function settingDifferences(backedUp: string[], now: string[], what: string, suffix: string): string[] {
  const found = new Set(now);
  const recorded = new Set(backedUp);
  return [
    ...backedUp.filter((item) => !found.has(item)).map((item) => `${what} ${item}${suffix} missing`),
    ...now.filter((item) => !recorded.has(item)).map((item) => `${what} ${item}${suffix} not in the backup`),
  ];
}

/**
 * "CONNECT for PUBLIC: revoked at backup, granted now" for each privilege and grantee whose
 * grants differ. The owner's grants, and those it made, are compared as the owner's whoever it
 * is (a different owner is a difference of its own); without `owners`, grantors are not compared.
 */
function aclDifferences(
  recorded: DatabaseProperties,
  found: DatabaseProperties,
  present: ReadonlySet<string>,
  owners: boolean,
  label: string,
  notes: string[],
): string[] {
  const OWNER = '\u0000owner';
  const grants = (properties: DatabaseProperties, backup: boolean) => {
    const states = new Map<string, Set<string>>();
    for (const item of properties.acl.map(parseAclItem)) {
      const [grantee, grantor] = [item.grantee, item.grantor].map((role) =>
        role === properties.owner ? OWNER : role,
      ) as [string, string];
      if (backup) {
        const missing = [grantee, ...(owners ? [grantor] : [])].find(
          (role) => role !== '' && role !== OWNER && !present.has(role),
        );
        if (missing !== undefined) {
          notes.push(
            `${label} ${describeGrant(item)} not compared: role ${displayIdentifier(missing)} does not exist here`,
          );
          continue;
        }
      }
      for (const { privilege, grantable } of item.privileges) {
        const key = JSON.stringify([privilege, grantee]);
        const state = `granted${grantable ? ' with grant option' : ''}${owners && grantor !== OWNER ? ` by ${displayIdentifier(grantor)}` : ''}`;
        states.set(key, (states.get(key) ?? new Set()).add(state));
      }
    }
    return states;
  };
  const before = grants(recorded, true);
  const after = grants(found, false);
  const describe = (states: Set<string> | undefined) =>
    states ? [...states].sort().join(' and ') : 'revoked';
  const differences: string[] = [];
  for (const key of [...new Set([...before.keys(), ...after.keys()])].sort()) {
    const [privilege, grantee] = JSON.parse(key) as [string, string];
    const was = describe(before.get(key));
    const is = describe(after.get(key));
    if (was !== is)
      differences.push(
        `${label} ${privilege} for ${grantee === OWNER ? 'the owner' : displayGrantee(grantee)}: ${was} at backup, ${is} now`,
      );
  }
  return differences;
}
