// {{name}}: a symphony-host plugin.
//
// `onExpire` runs when a trigger key `{tenant}:EXPTRIGGER:{action}:{id}`
// routed to this plugin expires. It counts the runs of each id in the
// handler state `{{name}}` (hash `{tenant}:state:{{name}}:{id}`, field
// `runs`), logs the action and id, and returns (ok). Throw a PluginError to
// fail the job with a message.
import { log, handlerState } from '../symphony/symphony.js';
import { summary } from './logic.js';

/**
 * @param {string} action
 * @param {string} id
 * @param {string} _key
 */
export function onExpire(action, id, _key) {
  // Scoped by the host to the tenant of the trigger that fired.
  const runs = handlerState.incrementField('{{name}}', id, 'runs', 1n, undefined);
  log.info(summary(action, id, runs));
}
