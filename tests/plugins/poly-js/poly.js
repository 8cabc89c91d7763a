// The cross-language test plugin, in JavaScript (see tests/plugins/poly).
import { log, tenant, user, generic, json, PluginError } from '../../../sdk/js/symphony.js';

/**
 * @param {string} action
 * @param {string} id
 * @param {string} _key
 */
export function onExpire(action, id, _key) {
  if (action === 'poly_fail') {
    throw new PluginError('poly failed');
  }
  if (action === 'poly_spin') {
    for (;;) {}
  }
  if (action === 'poly_one') {
    if (tenant() === '') throw new PluginError('no tenant');
    return;
  }
  if (action === 'poly_write') {
    generic.set(`w:${id}`, '1', undefined);
    return;
  }
  const visits = user.incrementField(id, 'visits', 1n, undefined);
  user.appendToList(id, 'history', json.to(action), undefined);
  generic.set(`last:${id}`, json.to({ action, tenant: tenant(), visits: Number(visits) }), undefined);
  log.info(`poly handled ${action} ${id}`);
}
