/**
 * What a physical backup asks the server before pg_basebackup starts, in one statement: the
 * cluster's identity and settings, whether WAL is archived, and its tablespaces. Settings a role
 * may not read (archive_command without pg_read_all_settings) come back null rather than failing.
 */
export const CLUSTER_FACTS = `select json_build_object(
  'systemIdentifier', (select system_identifier::text from pg_control_system()),
  'serverVersion', current_setting('server_version_num')::int,
  'dataChecksums', current_setting('data_checksums') = 'on',
  'walSegmentSize', (select setting::bigint from pg_settings where name = 'wal_segment_size'),
  'archiveMode', (select setting from pg_settings where name = 'archive_mode'),
  'archiveCommand', (select setting from pg_settings where name = 'archive_command'),
  'archiveLibrary', (select setting from pg_settings where name = 'archive_library'),
  'tablespaces', coalesce((
    select json_agg(json_build_object('oid', oid::text, 'name', spcname, 'location', pg_tablespace_location(oid)) order by oid)
    from pg_tablespace where spcname not in ('pg_default', 'pg_global')), '[]'::json)
)`;
