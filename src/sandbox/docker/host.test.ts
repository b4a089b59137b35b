import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { engineOnThisKernel, engineUnavailableReason } from './host.js';

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

describe('docker engine locality', () => {
  it("this host's kernel release and not Docker Desktop: local; anything else: another kernel", () => {
    assert.equal(engineOnThisKernel({ KernelVersion: '6.1.0-1', OperatingSystem: 'Debian GNU/Linux 12 (bookworm)' }, '6.1.0-1'), true);
    assert.equal(engineOnThisKernel({ KernelVersion: '6.6.12-linuxkit', OperatingSystem: 'Docker Desktop' }, '6.1.0-1'), false);
    assert.equal(engineOnThisKernel({ KernelVersion: '6.1.0-1', OperatingSystem: 'Docker Desktop' }, '6.1.0-1'), false, 'Desktop is a VM');
    assert.equal(engineOnThisKernel({}, '6.1.0-1'), false, 'an engine that does not say: not local (fail secure)');
    const deb = { KernelVersion: '6.1.0-1', OperatingSystem: 'Debian GNU/Linux 12 (bookworm)' };
    assert.equal(engineOnThisKernel(deb, '6.1.0-1', 'unix:///run/docker.sock'), true);
    assert.equal(engineOnThisKernel(deb, '6.1.0-1', 'tcp://10.0.0.5:2376'), false, 'over the network: remote, whatever its kernel');
  });
});
