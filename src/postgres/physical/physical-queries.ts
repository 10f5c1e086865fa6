/**
 * What a physical backup asks the server before it starts, in one statement: the cluster's
 * identity and settings, whether WAL is archived, its tablespaces, and whether this role may back
 * the data directory up by reading its files (PostgreSQL 15's pg_backup_start, and
 * pg_read_binary_file to make sure the files read are the server's). Settings a role may not read
 * (archive_command, data_directory without pg_read_all_settings) come back null rather than failing.
 */
export const CLUSTER_FACTS = `select json_build_object(
  'systemIdentifier', (select system_identifier::text from pg_control_system()),
  'serverVersion', current_setting('server_version_num')::int,
  'dataChecksums', current_setting('data_checksums') = 'on',
  'walSegmentSize', (select setting::bigint from pg_settings where name = 'wal_segment_size'),
  'catalogVersion', (select catalog_version_no from pg_control_system()),
  'dataDirectory', (select setting from pg_settings where name = 'data_directory'),
  'mayReadFiles', case when current_setting('server_version_num')::int >= 150000 then (
    select bool_and(has_function_privilege(signature, 'execute'))
    from unnest(array['pg_backup_start(text, boolean)', 'pg_backup_stop(boolean)', 'pg_read_binary_file(text)']) signature)
    else false end,
  'archiveMode', (select setting from pg_settings where name = 'archive_mode'),
  'archiveCommand', (select setting from pg_settings where name = 'archive_command'),
  'archiveLibrary', (select setting from pg_settings where name = 'archive_library'),
  'tablespaces', coalesce((
    select json_agg(json_build_object('oid', oid::text, 'name', spcname, 'location', pg_tablespace_location(oid)) order by oid)
    from pg_tablespace where spcname not in ('pg_default', 'pg_global')), '[]'::json)
)`;
