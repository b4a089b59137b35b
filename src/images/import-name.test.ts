import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { nameFromAnnotation } from './import.js';

describe('the image name recorded in an OCI layout (org.opencontainers.image.ref.name)', () => {
  it('takes name:tag, dropping Docker Hub prefixes and registry hosts that cannot be part of a local name', () => {
    assert.equal(nameFromAnnotation('python:3.11'), 'python:3.11');
    assert.equal(nameFromAnnotation('docker.io/library/python:3.11'), 'python:3.11');
    assert.equal(nameFromAnnotation('localhost/acme/agent:2'), 'acme/agent:2');
    assert.equal(nameFromAnnotation('registry.internal:5000/acme/agent:2'), 'acme/agent:2');
    assert.equal(nameFromAnnotation('ghcr.io/acme/agent:2'), 'ghcr.io/acme/agent:2');
  });

  it('a bare tag, a digest reference or garbage names nothing (the import stays untagged unless --tag)', () => {
    for (const s of ['3.11', `python:3.11@sha256:${'a'.repeat(64)}`, '../../etc:x', 'UPPER:1', '', undefined])
      assert.equal(nameFromAnnotation(s), null, String(s));
  });
});
