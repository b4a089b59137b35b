import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { engineUnavailableReason } from './host.js';

describe('docker engine availability', () => {
  it("when the Docker CLI's current context cannot be used: docker is unavailable, with the reason", () => {
    assert.match(
      engineUnavailableReason(undefined, 'context "s": ssh:// engines are not supported') ?? '',
      /current context cannot be used: .*ssh/,
    );
  });
  it('a tcp:// engine is not checked here (the first API call is)', () => {
    assert.equal(engineUnavailableReason('tcp://127.0.0.1:2376', undefined), null);
  });
  it('a missing socket file: unavailable', () => {
    assert.match(engineUnavailableReason('unix:///nonexistent/docker.sock', undefined) ?? '', /no Docker engine socket/);
  });
});
