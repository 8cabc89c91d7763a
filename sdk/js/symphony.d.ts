// Types of sdk/js/symphony.js and of the imports of the `plugin` world
// (wit/symphony.wit). Kept by hand: `jco types` cannot read WIT on these
// machines (os error 44). scripts/check-js-types.sh (run by .ci/run) fails
// when a WIT function is missing here.

/** JSON text. */
export type Json = string;
/** Seconds; `undefined` means the repository's default (86400 s). */
export type TtlSecs = number | undefined;

/** A failed host call throws an error whose `payload` is this. */
export type RepoError =
  | { tag: 'not-found' }
  | { tag: 'invalid-input'; val: string }
  | { tag: 'unavailable'; val: string }
  | { tag: 'denied'; val: string };

/** What a plugin module exports: return for ok, throw a string for an error. */
export type OnExpire = (action: string, id: string, key: string) => void;

export declare const log: {
  trace(message: string): void;
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
};
export declare function tenant(): string;
export declare const json: { to(value: unknown): Json; from(text: Json | undefined): any };
export declare function errorText(e: unknown): string;
/** Throw it from onExpire to fail the job with `message` (outcome `error`). */
export declare class PluginError extends Error {
  constructor(message: string);
  readonly payload: string;
}

export declare namespace user {
  export function get(userId: string): Json | undefined;
  export function upsert(userId: string, data: Json, ttlSecs: TtlSecs): void;
  export function getField(userId: string, field: string): Json | undefined;
  export function updateField(userId: string, field: string, value: Json, ttlSecs: TtlSecs): void;
  export function incrementField(userId: string, field: string, by: bigint, ttlSecs: TtlSecs): bigint;
  export function appendToList(userId: string, field: string, value: Json, ttlSecs: TtlSecs): void;
  export function deleteField(userId: string, field: string): boolean;
  function delete_(userId: string): boolean;
  export { delete_ as delete };
  export function exists(userId: string): boolean;
  export function findByField(field: string, value: Json): Json | undefined;
}

export declare namespace handlerState {
  export function get(name: string, userId: string): Json | undefined;
  export function upsert(name: string, userId: string, data: Json, ttlSecs: TtlSecs): void;
  export function getField(name: string, userId: string, field: string): Json | undefined;
  export function updateField(name: string, userId: string, field: string, value: Json, ttlSecs: TtlSecs): void;
  export function incrementField(name: string, userId: string, field: string, by: bigint, ttlSecs: TtlSecs): bigint;
  export function appendToList(name: string, userId: string, field: string, value: Json, ttlSecs: TtlSecs): void;
  function delete_(name: string, userId: string): boolean;
  export { delete_ as delete };
  export function exists(name: string, userId: string): boolean;
  export function merge(name: string, userId: string, data: Json, ttlSecs: TtlSecs): Json;
}

export declare namespace table {
  export function get(table: string, pk: string): Json | undefined;
  export function upsert(table: string, pk: string, data: Json, ttlSecs: TtlSecs): void;
  export function getField(table: string, pk: string, field: string): Json | undefined;
  export function updateField(table: string, pk: string, field: string, value: Json, ttlSecs: TtlSecs): void;
  export function incrementField(table: string, pk: string, field: string, by: bigint, ttlSecs: TtlSecs): bigint;
  export function appendToList(table: string, pk: string, field: string, value: Json, ttlSecs: TtlSecs): void;
  function delete_(table: string, pk: string): boolean;
  export { delete_ as delete };
  export function exists(table: string, pk: string): boolean;
  export function findByField(table: string, field: string, value: Json): Json | undefined;
  export function deleteAllByPkid(pk: string): number;
}

export declare namespace sharedState {
  export function get(state: string, userId: string): Json | undefined;
  export function upsert(state: string, userId: string, data: Json): void;
  export function getField(state: string, userId: string, field: string): Json | undefined;
  export function updateField(state: string, userId: string, field: string, value: Json, ttlSecs: TtlSecs): void;
  export function deleteField(state: string, userId: string, field: string): boolean;
  function delete_(state: string, userId: string): boolean;
  export { delete_ as delete };
  export function exists(state: string, userId: string): boolean;
  export function listStates(userId: string): string[];
  export function clearAllStates(userId: string): number;
}

export declare namespace batch {
  export function enqueue(service: string, entity: string, action: string, data: Json): bigint;
  export function getChunk(service: string, entity: string, action: string, start: bigint, stop: bigint): Json[];
  export function trim(service: string, entity: string, action: string, start: bigint, stop: bigint): void;
  export function length(service: string, entity: string, action: string): bigint;
  export function isPending(service: string): boolean;
  export function removeFromPending(service: string): boolean;
}

export declare namespace generic {
  export function set(key: string, value: Json, ttlSecs: TtlSecs): void;
  export function get(key: string): Json | undefined;
  function delete_(key: string): boolean;
  export { delete_ as delete };
}

export declare namespace trigger {
  /** Milliseconds, as a bigint: `trigger.set('followup', id, 60000n)`. */
  export function set(action: string, id: string, ttlMs: bigint): void;
  function delete_(action: string, id: string): boolean;
  export { delete_ as delete };
  export function deleteAllByIdentifier(id: string): number;
}

export declare namespace pubsub {
  export function publish(channel: string, message: Json): number;
}
