import { test } from 'node:test';
import assert from 'node:assert/strict';
import { greeting } from '../src/logic.js';

test('a user is greeted by name, else by id', () => {
  assert.equal(greeting({ name: 'Ann' }, 'u1'), 'welcome, Ann');
  assert.equal(greeting({}, 'u1'), 'welcome, u1');
  assert.equal(greeting(undefined, 'u1'), 'welcome, u1');
  assert.equal(greeting({ name: 42 }, 'u1'), 'welcome, u1');
});
