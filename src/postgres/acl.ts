/**
 * Reading PostgreSQL's aclitem text ("grantee=privileges/grantor", PUBLIC an empty grantee, a role
 * name double-quoted with "" for a quote unless it is letters, digits and underscores), for the
 * comparisons of ACLs after a restore.
 */

/** An ACL recorded as its aclitems joined by spaces, split back; a quoted name may hold spaces. */
export function splitAcl(acl: string): string[] {
  return acl.match(/(?:"(?:[^"]|"")*"|[^\s"])+/g) ?? [];
}

/** An aclitem's parts: the grantee as written (quoted where it needs), its privilege letters, the grantor if written. */
export function aclItemParts(item: string): { grantee: string; privileges: string; grantor?: string } {
  const grantee = roleAt(item, 0);
  const slash = item.indexOf('/', grantee.end + 1);
  const privileges = item.slice(grantee.end + 1, slash < 0 ? item.length : slash);
  return slash < 0
    ? { grantee: grantee.text, privileges }
    : { grantee: grantee.text, privileges, grantor: roleAt(item, slash + 1).text };
}

/**
 * "alice=rw/alice" as "(owner)=rw/(owner)" when alice owns the object, and "bob=r/alice" as
 * "bob=r/(owner)"; without grantors, as "(owner)=rw" and "bob=r". An aclitem quotes a role name
 * unless it is letters, digits and underscores, so "(owner)" is no role's.
 */
export function comparableAclItem(item: string, owner: string | undefined, grantors: boolean): string {
  const grantee = roleAt(item, 0);
  const slash = item.indexOf('/', grantee.end + 1);
  const privileges = item.slice(grantee.end + 1, slash < 0 ? item.length : slash);
  const role = ({ name, text }: { name: string; text: string }) => (name === owner ? '(owner)' : text);
  const granted = `${role(grantee)}=${privileges}`;
  return grantors && slash >= 0 ? `${granted}/${role(roleAt(item, slash + 1))}` : granted;
}

/**
 * The role name at `start` of an aclitem, as written and unquoted (empty for PUBLIC), and where
 * it ends. Unquoted, a name holds neither "=" nor "/".
 */
export function roleAt(item: string, start: number): { name: string; text: string; end: number } {
  let end = start;
  if (item[start] === '"') {
    for (end++; end < item.length && !(item[end] === '"' && item[end + 1] !== '"');)
      end += item[end] === '"' ? 2 : 1;
    end++;
    const text = item.slice(start, end);
    return { name: text.slice(1, -1).replaceAll('""', '"'), text, end };
  }
  while (end < item.length && item[end] !== '=' && item[end] !== '/') end++;
  const text = item.slice(start, end);
  return { name: text, text, end };
}
