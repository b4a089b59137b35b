/**
 * The four `Reflect` metadata functions that tsyringe (a dependency of @peculiar/x509) checks
 * for at load time, for want of the reflect-metadata package (not installed, and a new
 * dependency is not worth four functions). Installed only where missing; metadata is kept in a
 * WeakMap per target and key, which is all tsyringe's registration uses.
 */
type MetaReflect = typeof Reflect & {
  getMetadata?: (key: unknown, target: object, prop?: PropertyKey) => unknown;
  getOwnMetadata?: (key: unknown, target: object, prop?: PropertyKey) => unknown;
  defineMetadata?: (key: unknown, value: unknown, target: object, prop?: PropertyKey) => void;
  hasMetadata?: (key: unknown, target: object, prop?: PropertyKey) => boolean;
};

const R = Reflect as MetaReflect;
if (typeof R.getMetadata !== 'function') {
  const store = new WeakMap<object, Map<unknown, unknown>>();
  const slot = (key: unknown, prop?: PropertyKey): unknown => (prop === undefined ? key : `${String(prop)}\0${String(key)}`);
  R.defineMetadata = (key, value, target, prop) => {
    let m = store.get(target);
    if (!m) store.set(target, (m = new Map()));
    m.set(slot(key, prop), value);
  };
  R.getOwnMetadata = (key, target, prop) => store.get(target)?.get(slot(key, prop));
  R.getMetadata = (key, target, prop) => {
    for (let t: object | null = target; t !== null; t = Object.getPrototypeOf(t) as object | null) {
      const m = store.get(t);
      const k = slot(key, prop);
      if (m?.has(k)) return m.get(k);
    }
    return undefined;
  };
  R.hasMetadata = (key, target, prop) => R.getMetadata!(key, target, prop) !== undefined;
}

export {};
