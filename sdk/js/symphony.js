// Helpers for symphony-host plugins written in JavaScript.
//
// A plugin is an ES module exporting `onExpire(action, id, key)`; return to
// report ok, throw a `PluginError` to report an error (any other `Error`
// traps the job). Import what you need from here (`symphony-host build`
// bundles it into the component); in a project made by `symphony-host new`:
//
//   import { log, tenant, user, generic, json } from '../symphony/symphony.js';
//
// The repositories are the WIT interfaces (wit/symphony.wit), with names in
// camelCase: `user.incrementField(id, 'visits', 1n, undefined)`. Values cross
// as JSON text: `json.to(value)` and `json.from(text)` convert. A call that
// fails throws; its `payload` is the WIT `repo-error` ({ tag, val }).
// Typings: symphony.d.ts beside this file (kept by hand in the symphony-host
// repository, whose scripts/check-js-types.sh checks it covers the WIT and
// compiles).

import { log as wasmLog } from 'symphony:plugin/log@0.1.0';
import { tenant as wasmTenant } from 'symphony:plugin/context@0.1.0';
import * as user from 'symphony:plugin/user@0.1.0';
import * as handlerState from 'symphony:plugin/handler-state@0.1.0';
import * as table from 'symphony:plugin/table@0.1.0';
import * as sharedState from 'symphony:plugin/shared-state@0.1.0';
import * as batch from 'symphony:plugin/batch@0.1.0';
import * as generic from 'symphony:plugin/generic@0.1.0';
import * as trigger from 'symphony:plugin/trigger@0.1.0';
import * as pubsub from 'symphony:plugin/pubsub@0.1.0';

/** Logging into the host's tracing, tagged with tenant, action, id and plugin. */
export const log = {
  trace: (message) => wasmLog('trace', String(message)),
  debug: (message) => wasmLog('debug', String(message)),
  info: (message) => wasmLog('info', String(message)),
  warn: (message) => wasmLog('warn', String(message)),
  error: (message) => wasmLog('error', String(message)),
};

/** The tenant of the trigger that fired. */
export const tenant = () => wasmTenant();

/** JSON text to and from values, for the repositories' `json` arguments and results. */
export const json = {
  to: (value) => JSON.stringify(value),
  from: (text) => (text === undefined ? undefined : JSON.parse(text)),
};

/**
 * A handler's failure: `throw new PluginError('why')` fails the job with that
 * text (the dispatch outcome `error`, retried per the plugin's retry
 * policy). Its `payload` is what crosses to the host: an `Error` without
 * one thrown from `onExpire` traps the job instead (outcome `trap`).
 */
export class PluginError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = 'PluginError';
    this.payload = String(message);
  }
}

/** The text of a failed host call's error (`repo-error`). */
export function errorText(e) {
  const p = e && e.payload !== undefined ? e.payload : e;
  if (p && typeof p === 'object' && 'tag' in p) {
    return p.val === undefined ? p.tag : `${p.tag}: ${p.val}`;
  }
  return String(e);
}

export { user, handlerState, table, sharedState, batch, generic, trigger, pubsub };
