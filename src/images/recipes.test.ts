import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { howToObtain, RECIPES } from './recipes.js';

describe('runtime recipes', () => {
  it('has the runtimes people ask for, named by what Debian 12 ships', () => {
    for (const r of ['python:3.11', 'node:18', 'debian:12']) assert.ok(Object.hasOwn(RECIPES, r), r);
    assert.ok(RECIPES['node:18']!.packages.includes('nodejs'));
    assert.equal(RECIPES['node:18']!.smoke?.expect, '18.');
    assert.ok(RECIPES['debian:12']!.packages.includes('procps'));
  });

  it('a missing runtime names the exact command: build for a recipe, import under the tag otherwise', () => {
    assert.equal(howToObtain('node:18'), 'aegis image build node:18');
    assert.equal(howToObtain('acme/agent:2'), 'aegis image import <oci-layout-or-docker-save.tar> --tag acme/agent:2');
    assert.equal(howToObtain('constructor:1'), 'aegis image import <oci-layout-or-docker-save.tar> --tag constructor:1');
  });
});
