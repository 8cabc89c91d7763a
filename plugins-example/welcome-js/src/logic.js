// The welcome plugin's logic, free of host calls: `node --test` tests it.

/**
 * The greeting for a user: by the record's `name`, else by the id.
 * @param {{ name?: unknown } | undefined | null} profile
 * @param {string} id
 * @returns {string}
 */
export function greeting(profile, id) {
  const name = profile && typeof profile.name === 'string' && profile.name !== '' ? profile.name : id;
  return `welcome, ${name}`;
}
