/**
 * The schema fingerprint's catalog query (schema-fingerprint.ts): what the catalog says about
 * every object of a database's own, one JSON object per object, {kind, name, props}. Run at
 * backup in pg_dump's exported snapshot and after a restore on the restored database: the same
 * text on both sides, so the same meaning.
 *
 * It runs with search_path empty, as pg_dump does, so that pg_get_*def and reg* casts qualify
 * every name the same way whatever the session's path; client_encoding UTF8 so that the text
 * decodes alike whatever the database's encoding. Objects that belong to an extension are left
 * to the extension's own line (its version), as pg_dump leaves them to CREATE EXTENSION.
 * Columns that differ between server versions are read through to_jsonb(row), which gives null
 * for a column a version lacks. Values are text or null (null: not set); an ACL is its items sorted, so that the order GRANTs
 * ran in does not matter, and a NULL ACL reads as the default it stands for.
 */
import { quoteIdentifier, quoteLiteral } from '../queries.ts';

/** An aclitem[] expression as its items' text, sorted and joined by spaces (acl.ts splits it back). */
function sortedAcl(acl: string): string {
  return `(select pg_catalog.string_agg(item::text, ' ' order by item::text) from pg_catalog.unnest(${acl}) item)`;
}

/** As sortedAcl, a NULL ACL read as the default it stands for: acldefault(kind, owner). */
function aclOrDefault(acl: string, kind: string, owner: string): string {
  return sortedAcl(`coalesce(${acl}, pg_catalog.acldefault('${kind}', ${owner}))`);
}

export const SCHEMA_FINGERPRINT = `set search_path = '';
set client_encoding = 'UTF8';
with ns as (
  select n.oid, n.nspname from pg_catalog.pg_namespace n
  where n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')
    and n.nspname not like 'pg\\_temp\\_%' and n.nspname not like 'pg\\_toast\\_temp\\_%'
),
members as (
  select d.classid, d.objid from pg_catalog.pg_depend d where d.deptype = 'e'
),
rel as (
  select c.*, n.nspname, pg_catalog.format('%I.%I', n.nspname, c.relname) as qualified
  from pg_catalog.pg_class c join ns n on n.oid = c.relnamespace
  where not exists (select 1 from members m where m.classid = 'pg_catalog.pg_class'::pg_catalog.regclass and m.objid = c.oid)
),
objects as (
  select 'schema' as kind, pg_catalog.quote_ident(n.nspname) as name, pg_catalog.json_build_object(
    'owner', pg_catalog.pg_get_userbyid(n.nspowner),
    'acl', ${aclOrDefault('n.nspacl', 'n', 'n.nspowner')},
    'comment', pg_catalog.obj_description(n.oid, 'pg_namespace')) as props
  from pg_catalog.pg_namespace n join ns using (oid)
  where not exists (select 1 from members m where m.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass and m.objid = n.oid)

  union all
  select case c.relkind when 'f' then 'foreign table' else 'table' end, c.qualified, pg_catalog.json_build_object(
    'owner', pg_catalog.pg_get_userbyid(c.relowner),
    'acl', ${aclOrDefault('c.relacl', 'r', 'c.relowner')},
    'comment', pg_catalog.obj_description(c.oid, 'pg_class'),
    'persistence', c.relpersistence::text,
    'rowSecurity', c.relrowsecurity::text,
    'forceRowSecurity', c.relforcerowsecurity::text,
    'replicaIdentity', c.relreplident::text,
    'options', pg_catalog.array_to_string(c.reloptions, ', '),
    'accessMethod', (select am.amname::text from pg_catalog.pg_am am where am.oid = c.relam),
    'partitionKey', case when c.relkind = 'p' then pg_catalog.pg_get_partkeydef(c.oid) end,
    'partitionBound', pg_catalog.pg_get_expr(c.relpartbound, c.oid),
    'inherits', (select pg_catalog.string_agg(p.oid::pg_catalog.regclass::text, ', ' order by i.inhseqno)
      from pg_catalog.pg_inherits i join pg_catalog.pg_class p on p.oid = i.inhparent where i.inhrelid = c.oid),
    'ofType', case when c.reloftype <> 0 then c.reloftype::pg_catalog.regtype::text end,
    'columns', (select pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' order by a.attnum)
      from pg_catalog.pg_attribute a where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped),
    'server', (select s.srvname::text from pg_catalog.pg_foreign_table ft join pg_catalog.pg_foreign_server s on s.oid = ft.ftserver where ft.ftrelid = c.oid),
    'serverOptions', (select pg_catalog.array_to_string(ft.ftoptions, ', ') from pg_catalog.pg_foreign_table ft where ft.ftrelid = c.oid))
  from rel c where c.relkind in ('r', 'p', 'f')

  union all
  select case c.relkind when 'v' then 'view' else 'materialized view' end, c.qualified, pg_catalog.json_build_object(
    'owner', pg_catalog.pg_get_userbyid(c.relowner),
    'acl', ${aclOrDefault('c.relacl', 'r', 'c.relowner')},
    'comment', pg_catalog.obj_description(c.oid, 'pg_class'),
    'definition', pg_catalog.pg_get_viewdef(c.oid),
    'options', pg_catalog.array_to_string(c.reloptions, ', '),
    'populated', case when c.relkind = 'm' then c.relispopulated::text end)
  from rel c where c.relkind in ('v', 'm')

  union all
  select 'sequence', c.qualified, pg_catalog.json_build_object(
    'owner', pg_catalog.pg_get_userbyid(c.relowner),
    'acl', ${aclOrDefault('c.relacl', 's', 'c.relowner')},
    'comment', pg_catalog.obj_description(c.oid, 'pg_class'),
    'persistence', c.relpersistence::text,
    'type', pg_catalog.format_type(s.seqtypid, null),
    'start', s.seqstart::text, 'increment', s.seqincrement::text, 'minimum', s.seqmin::text,
    'maximum', s.seqmax::text, 'cache', s.seqcache::text, 'cycle', s.seqcycle::text,
    'ownedBy', (select pg_catalog.format('%s.%I', t.oid::pg_catalog.regclass::text, a.attname)
      from pg_catalog.pg_depend d join pg_catalog.pg_class t on t.oid = d.refobjid
      join pg_catalog.pg_attribute a on a.attrelid = t.oid and a.attnum = d.refobjsubid
      where d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass and d.objid = c.oid
        and d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass and d.deptype in ('a', 'i') limit 1))
  from rel c join pg_catalog.pg_sequence s on s.seqrelid = c.oid where c.relkind = 'S'

  union all
  select 'index', c.qualified, pg_catalog.json_build_object(
    'comment', pg_catalog.obj_description(c.oid, 'pg_class'),
    'definition', pg_catalog.pg_get_indexdef(c.oid),
    'clustered', i.indisclustered::text,
    'replicaIdentity', i.indisreplident::text)
  from rel c join pg_catalog.pg_index i on i.indexrelid = c.oid where c.relkind in ('i', 'I')

  union all
  select 'column', pg_catalog.format('%s.%I', c.qualified, a.attname), pg_catalog.json_build_object(
    'type', pg_catalog.format_type(a.atttypid, a.atttypmod),
    'notNull', a.attnotnull::text,
    'default', case when a.attgenerated = '' then pg_catalog.pg_get_expr(d.adbin, d.adrelid) end,
    'generated', case when a.attgenerated <> '' then pg_catalog.pg_get_expr(d.adbin, d.adrelid) end,
    'identity', nullif(a.attidentity::text, ''),
    'collation', case when a.attcollation <> t.typcollation then (select pg_catalog.format('%I.%I', cn.nspname, co.collname)
      from pg_catalog.pg_collation co join pg_catalog.pg_namespace cn on cn.oid = co.collnamespace where co.oid = a.attcollation) end,
    'comment', pg_catalog.col_description(c.oid, a.attnum),
    'acl', ${sortedAcl('a.attacl')},
    'statistics', case when (pg_catalog.to_jsonb(a) ->> 'attstattarget')::int >= 0 then pg_catalog.to_jsonb(a) ->> 'attstattarget' end,
    'storage', case when a.attstorage <> t.typstorage then a.attstorage::text end,
    'compression', nullif(pg_catalog.to_jsonb(a) ->> 'attcompression', ''))
  from rel c join pg_catalog.pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
  join pg_catalog.pg_type t on t.oid = a.atttypid
  left join pg_catalog.pg_attrdef d on d.adrelid = c.oid and d.adnum = a.attnum
  where c.relkind in ('r', 'p', 'f', 'v', 'm', 'c')

  union all
  select 'constraint', pg_catalog.format('%s.%I', coalesce(r.qualified, pg_catalog.format('%I.%I', n.nspname, ty.typname)), k.conname),
    pg_catalog.json_build_object(
      'definition', pg_catalog.pg_get_constraintdef(k.oid),
      'validated', k.convalidated::text,
      'comment', pg_catalog.obj_description(k.oid, 'pg_constraint'))
  from pg_catalog.pg_constraint k join ns n on n.oid = k.connamespace
  left join rel r on r.oid = k.conrelid
  left join pg_catalog.pg_type ty on ty.oid = k.contypid
  where (r.oid is not null or ty.oid is not null)
    and not exists (select 1 from members m where m.classid = 'pg_catalog.pg_type'::pg_catalog.regclass and m.objid = k.contypid)

  union all
  select 'trigger', pg_catalog.format('%s.%I', r.qualified, g.tgname), pg_catalog.json_build_object(
    'definition', pg_catalog.pg_get_triggerdef(g.oid),
    'enabled', g.tgenabled::text,
    'comment', pg_catalog.obj_description(g.oid, 'pg_trigger'))
  from pg_catalog.pg_trigger g join rel r on r.oid = g.tgrelid where not g.tgisinternal

  union all
  select 'policy', pg_catalog.format('%s.%I', r.qualified, p.polname), pg_catalog.json_build_object(
    'command', p.polcmd::text,
    'permissive', p.polpermissive::text,
    'roles', (select pg_catalog.string_agg(case when o = 0 then 'PUBLIC' else pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(o)) end, ', '
      order by case when o = 0 then 'PUBLIC' else pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(o)) end) from pg_catalog.unnest(p.polroles) o),
    'using', pg_catalog.pg_get_expr(p.polqual, p.polrelid),
    'check', pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid),
    'comment', pg_catalog.obj_description(p.oid, 'pg_policy'))
  from pg_catalog.pg_policy p join rel r on r.oid = p.polrelid

  union all
  select 'rule', pg_catalog.format('%s.%I', r.qualified, w.rulename), pg_catalog.json_build_object(
    'definition', pg_catalog.pg_get_ruledef(w.oid),
    'enabled', w.ev_enabled::text,
    'comment', pg_catalog.obj_description(w.oid, 'pg_rewrite'))
  from pg_catalog.pg_rewrite w join rel r on r.oid = w.ev_class where w.rulename <> '_RETURN'

  union all
  select case p.prokind when 'p' then 'procedure' when 'a' then 'aggregate' else 'function' end,
    pg_catalog.format('%I.%I(%s)', n.nspname, p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid)),
    pg_catalog.json_build_object(
      'owner', pg_catalog.pg_get_userbyid(p.proowner),
      'acl', ${aclOrDefault('p.proacl', 'f', 'p.proowner')},
      'comment', pg_catalog.obj_description(p.oid, 'pg_proc'),
      'definition', case when p.prokind <> 'a' then pg_catalog.pg_get_functiondef(p.oid) else (
        select pg_catalog.row_to_json(x)::text from (select g.aggkind, g.aggnumdirectargs,
          g.aggtransfn::text as transition, g.aggfinalfn::text as final, g.aggcombinefn::text as combine,
          g.aggserialfn::text as serial, g.aggdeserialfn::text as deserial, g.aggmtransfn::text as moving,
          g.aggminvtransfn::text as inverse, g.aggmfinalfn::text as movingfinal, g.aggfinalextra, g.aggmfinalextra,
          g.aggfinalmodify, g.aggmfinalmodify, g.aggsortop::pg_catalog.regoperator::text as sortop,
          pg_catalog.format_type(g.aggtranstype, null) as state, g.aggtransspace, pg_catalog.format_type(g.aggmtranstype, null) as movingstate,
          g.aggmtransspace, g.agginitval, g.aggminitval, pg_catalog.pg_get_function_result(p.oid) as result, p.proparallel
          from pg_catalog.pg_aggregate g where g.aggfnoid = p.oid) x) end)
  from pg_catalog.pg_proc p join ns n on n.oid = p.pronamespace
  where not exists (select 1 from members m where m.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass and m.objid = p.oid)

  union all
  select case t.typtype when 'd' then 'domain' when 'e' then 'enum' when 'r' then 'range' when 'c' then 'composite type' else 'type' end,
    pg_catalog.format('%I.%I', n.nspname, t.typname),
    pg_catalog.json_build_object(
      'owner', pg_catalog.pg_get_userbyid(t.typowner),
      'acl', ${aclOrDefault('t.typacl', 'T', 't.typowner')},
      'comment', pg_catalog.obj_description(t.oid, 'pg_type'),
      'base', case when t.typtype = 'd' then pg_catalog.format_type(t.typbasetype, t.typtypmod) end,
      'notNull', case when t.typtype = 'd' then t.typnotnull::text end,
      'default', t.typdefault,
      'collation', case when t.typtype = 'd' and t.typcollation <> coalesce((select b.typcollation from pg_catalog.pg_type b where b.oid = t.typbasetype), 0)
        then t.typcollation::pg_catalog.regcollation::text end,
      'labels', case when t.typtype = 'e' then (select pg_catalog.string_agg(pg_catalog.quote_literal(e.enumlabel), ', ' order by e.enumsortorder)
        from pg_catalog.pg_enum e where e.enumtypid = t.oid) end,
      'range', case when t.typtype = 'r' then (select pg_catalog.row_to_json(x)::text from (select pg_catalog.format_type(r.rngsubtype, null) as subtype,
        r.rngcollation::pg_catalog.regcollation::text as collation, (select o.opcname::text from pg_catalog.pg_opclass o where o.oid = r.rngsubopc) as opclass,
        r.rngcanonical::text as canonical, r.rngsubdiff::text as subdiff, r.rngmultitypid::pg_catalog.regtype::text as multirange
        from pg_catalog.pg_range r where r.rngtypid = t.oid) x) end,
      'io', case when t.typtype = 'b' then pg_catalog.concat_ws(' ', t.typinput::text, t.typoutput::text, t.typreceive::text, t.typsend::text,
        t.typmodin::text, t.typmodout::text, t.typanalyze::text, t.typlen::text, t.typbyval::text, t.typalign::text, t.typstorage::text, t.typcategory::text) end)
  from pg_catalog.pg_type t join ns n on n.oid = t.typnamespace
  where t.typtype in ('b', 'd', 'e', 'r', 'c')
    and (t.typtype <> 'c' or exists (select 1 from pg_catalog.pg_class c where c.oid = t.typrelid and c.relkind = 'c'))
    and not exists (select 1 from pg_catalog.pg_type e where e.typarray = t.oid)
    and not exists (select 1 from members m where m.classid = 'pg_catalog.pg_type'::pg_catalog.regclass and m.objid = t.oid)

  union all
  select 'extension', pg_catalog.quote_ident(x.extname), pg_catalog.json_build_object(
    'version', x.extversion,
    'schema', (select pg_catalog.quote_ident(n.nspname) from pg_catalog.pg_namespace n where n.oid = x.extnamespace),
    'comment', pg_catalog.obj_description(x.oid, 'pg_extension'))
  from pg_catalog.pg_extension x

  union all
  select 'event trigger', pg_catalog.quote_ident(v.evtname), pg_catalog.json_build_object(
    'owner', pg_catalog.pg_get_userbyid(v.evtowner),
    'event', v.evtevent::text,
    'function', v.evtfoid::pg_catalog.regproc::text,
    'enabled', v.evtenabled::text,
    'tags', pg_catalog.array_to_string(v.evttags, ', '),
    'comment', pg_catalog.obj_description(v.oid, 'pg_event_trigger'))
  from pg_catalog.pg_event_trigger v
  where not exists (select 1 from members m where m.classid = 'pg_catalog.pg_event_trigger'::pg_catalog.regclass and m.objid = v.oid)

  union all
  select 'default privileges', pg_catalog.format('for %I%s on %s', pg_catalog.pg_get_userbyid(a.defaclrole),
      case when a.defaclnamespace = 0 then '' else pg_catalog.format(' in %I', (select n.nspname from pg_catalog.pg_namespace n where n.oid = a.defaclnamespace)) end,
      case a.defaclobjtype when 'r' then 'tables' when 'S' then 'sequences' when 'f' then 'functions' when 'T' then 'types' when 'n' then 'schemas' else a.defaclobjtype::text end),
    pg_catalog.json_build_object('acl', ${sortedAcl('a.defaclacl')})
  from pg_catalog.pg_default_acl a

  union all
  select 'statistics', pg_catalog.format('%I.%I', n.nspname, s.stxname), pg_catalog.json_build_object(
    'owner', pg_catalog.pg_get_userbyid(s.stxowner),
    'definition', pg_catalog.pg_get_statisticsobjdef(s.oid),
    'target', case when (pg_catalog.to_jsonb(s) ->> 'stxstattarget')::int >= 0 then pg_catalog.to_jsonb(s) ->> 'stxstattarget' end,
    'comment', pg_catalog.obj_description(s.oid, 'pg_statistic_ext'))
  from pg_catalog.pg_statistic_ext s join ns n on n.oid = s.stxnamespace

  union all
  select 'collation', pg_catalog.format('%I.%I', n.nspname, o.collname), pg_catalog.json_build_object(
    'owner', pg_catalog.pg_get_userbyid(o.collowner),
    'provider', o.collprovider::text, 'collate', o.collcollate, 'ctype', o.collctype,
    'locale', coalesce(pg_catalog.to_jsonb(o) ->> 'colliculocale', pg_catalog.to_jsonb(o) ->> 'colllocale'), 'deterministic', o.collisdeterministic::text,
    'comment', pg_catalog.obj_description(o.oid, 'pg_collation'))
  from pg_catalog.pg_collation o join ns n on n.oid = o.collnamespace
  where not exists (select 1 from members m where m.classid = 'pg_catalog.pg_collation'::pg_catalog.regclass and m.objid = o.oid)
)
select coalesce(pg_catalog.json_agg(pg_catalog.json_build_object('kind', kind, 'name', name, 'props', props)), '[]') from objects`;

/** The materialized views populated now, as [{schema, name}], those of extensions aside. */
export const POPULATED_MATERIALIZED_VIEWS = `select coalesce(pg_catalog.json_agg(pg_catalog.json_build_object('schema', n.nspname, 'name', c.relname)
    order by n.nspname, c.relname), '[]')
  from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
  where c.relkind = 'm' and c.relispopulated
    and not exists (select 1 from pg_catalog.pg_depend d where d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass and d.objid = c.oid and d.deptype = 'e')`;

/** A materialized view's query, its names qualified (search_path empty), as the server prints it. */
export function viewDefinition(view: { schema: string; name: string }): string {
  return `set search_path = ''; select pg_catalog.pg_get_viewdef(pg_catalog.to_regclass(${quoteLiteral(`${quoteIdentifier(view.schema)}.${quoteIdentifier(view.name)}`)}))`;
}
