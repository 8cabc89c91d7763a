import { test } from 'node:test';
import assert from 'node:assert/strict';
import { summary } from '../src/logic.js';

test('the summary names the action, the id and the run', () => {
  assert.equal(summary('remind', 'u1', 2n), 'remind for u1: run 2');
});
