// The plugin's own logic, free of host calls: `node --test` tests it.

/**
 * The log line of one run.
 * @param {string} action
 * @param {string} id
 * @param {bigint} runs
 * @returns {string}
 */
export function summary(action, id, runs) {
  return `${action} for ${id}: run ${runs}`;
}
