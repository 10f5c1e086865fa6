/**
 * The little of the WebAssembly API strongbox uses: TypeScript's ES libraries do not declare it
 * (the DOM library does), though every Node.js has it.
 */
interface WebAssemblyApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object) => { exports: Record<string, unknown> };
}

/**
 * Compiles and instantiates one of the kernels scripts/build-wasm.sh builds (a few KiB: well
 * under a millisecond). Their memory never grows, so views of it stay valid.
 */
export function instantiateKernel<Exports>(base64: string): { exports: Exports; memory: ArrayBuffer } {
  const wasm = (globalThis as unknown as { WebAssembly: WebAssemblyApi }).WebAssembly;
  const instance = new wasm.Instance(new wasm.Module(Buffer.from(base64, 'base64')));
  const memory = (instance.exports.memory as { buffer: ArrayBuffer }).buffer;
  return { exports: instance.exports as Exports, memory };
}
