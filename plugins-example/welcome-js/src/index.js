// Example plugin in JavaScript: welcomes a new user.
//
// On `welcome_user` for a user id it reads the user's record, logs a
// greeting, counts the welcome in the table row `stats/welcomes`, merges
// `{ welcomed: true }` into the handler state `onboarding` of the user, and
// schedules `followup_onboarding` (handled by the reminders plugin) in 10 s.
// It needs the capabilities user:read, table, handler-state and trigger.
import { log, tenant, user, table, handlerState, trigger, json, errorText, PluginError } from '../../../sdk/js/symphony.js';
import { greeting } from './logic.js';

/**
 * @param {string} action
 * @param {string} id
 * @param {string} _key
 */
export function onExpire(action, id, _key) {
  if (action !== 'welcome_user') {
    throw new PluginError(`welcome does not handle ${action}`);
  }
  let profile;
  try {
    profile = json.from(user.get(id));
  } catch (e) {
    throw new PluginError(`cannot read user ${id}: ${errorText(e)}`);
  }
  log.info(`${greeting(profile, id)} (tenant ${tenant()})`);
  const count = table.incrementField('stats', 'welcomes', 'count', 1n, undefined);
  handlerState.merge('onboarding', id, json.to({ welcomed: true, welcome_number: Number(count) }), undefined);
  trigger.set('followup_onboarding', id, 10000n);
}
