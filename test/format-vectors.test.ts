import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Chunker, gearTable } from '../src/chunking/fastcdc.ts';
import { seededBytes } from './helpers/data.ts';
import { decodeDelta, encodeDelta } from '../src/compression/delta.ts';
import { deriveSubkey } from '../src/crypto/kdf.ts';
import { recipientTag } from '../src/crypto/key-wrap.ts';
import { SigningKey } from '../src/crypto/signing.ts';
import {
  signatureValid,
  signObject,
  splitSigned,
  trailerDigest,
  writerId,
} from '../src/repository/signed-object.ts';
import { walFrameAad } from '../src/repository/wal-file.ts';

/** The test vectors printed in docs/FORMAT.md, so that the document stays true. */
describe('docs/FORMAT.md test vectors', () => {
  const writerSecret = Buffer.alloc(32, 1);

  it('derives the documented keys from a writer secret', () => {
    expect(deriveSubkey(writerSecret, 'blob-id').toString('hex')).toBe(
      '2ded2d5bbcad7e8393e4b4498575835cd82042c82727df6adf6390fc3c8627ed',
    );
    expect(deriveSubkey(writerSecret, 'metadata').toString('hex')).toBe(
      '7329129d8a9cf2dfcf581ad7d61bb87ec8c2d78c50fd8c99496abe9b4b8872cf',
    );
    const seed = deriveSubkey(writerSecret, 'chunker-gear');
    expect(seed.toString('hex')).toBe('512079ea6883b2388f9ec282ae30503e4e748d8130b6e9519e3c7586e17fca01');
    expect([...gearTable(seed).slice(0, 4)]).toEqual([-1977361885, -958202355, 1674077442, 1106425262]);
  });

  it('computes the documented blob id and recipient tag', () => {
    const id = createHmac('sha256', deriveSubkey(writerSecret, 'blob-id')).update('strongbox').digest('hex');
    expect(id).toBe('1ee1444b1d648ef2f820e6ade70e3ecf5c9615b781f2e9545687ec38072cad6b');
    expect(recipientTag(Buffer.alloc(32, 2)).toString('hex')).toBe('a7f73878110c1fee');
  });

  it('signs the documented object with the documented writer key', () => {
    const key = new SigningKey(Buffer.alloc(32, 3));
    expect(key.publicRaw.toString('hex')).toBe(
      'ed4928c628d1c2c6eae90338905995612959273a5c63f93636c14614ac8737d1',
    );
    expect(writerId(key.publicRaw)).toBe('8ed413c1526c54d7');
    const repositoryId = '00'.repeat(32);
    const signed = signObject('index', repositoryId, Buffer.from('strongbox'), key);
    expect(signed.length).toBe(9 + 100);
    expect(signed.subarray(9, 41).equals(key.publicRaw)).toBe(true);
    expect(signed.subarray(41, 105).toString('hex')).toBe(
      '6ddf7ee6e3c9ab171432551ffbc6d739f86e5e113aba8c1219e03df3e9ce3a2a' +
        '7dd2b885d195fac70947aba315b271741da6c1502922f4ebf411ac38d3ae4a03',
    );
    expect(signed.subarray(105).toString('latin1')).toBe('SBSG');
    const parts = splitSigned(signed)!;
    expect(signatureValid('index', repositoryId, parts)).toBe(true);
    expect(signatureValid('snapshot', repositoryId, parts)).toBe(false);
    expect(signatureValid('index', '11'.repeat(32), parts)).toBe(false);
  });

  it('signs the documented WAL object, named in endorsements by the hash of its trailer', () => {
    const key = new SigningKey(Buffer.alloc(32, 3));
    const signed = signObject('wal', '00'.repeat(32), Buffer.from('strongbox'), key);
    expect(signed.subarray(41, 105).toString('hex')).toBe(
      '0917c7ba9290bac40faddebef1f962c10311442677ca3b34a33cd09254a31815' +
        'a300abbfba3588856f051705d1c06b7f7ef031fb48dcccfc9acea47c8848e70c',
    );
    expect(trailerDigest(signed.subarray(signed.length - 100))).toBe(
      '35534108560d6fa63329ee1fdaee6414727e6bd60636ac4f68789dcd421da244',
    );
    expect(walFrameAad(2, true).toString('hex')).toBe('7374726f6e67626f782077616c206672616d650200000001');
  });

  it('encodes the documented delta', () => {
    const base = Buffer.from(Array.from({ length: 100 }, (_, i) => i));
    const target = Buffer.concat([base.subarray(0, 50), Buffer.from('XY'), base.subarray(50)]);
    const delta = encodeDelta(base, target);
    expect(delta.toString('hex')).toBe('01646665000458596500');
    expect(decodeDelta(base, delta).equals(target)).toBe(true);
  });

  it('computes the documented sketch of the first FastCDC vector chunk', () => {
    const chunker = new Chunker(
      { min: 2048, avg: 8192, max: 32768 },
      gearTable(Buffer.from('strongbox test seed')),
    );
    const [first] = chunker.push(seededBytes('strongbox fastcdc vector', 1 << 20));
    expect(first!.data.length).toBe(9216);
    expect(first!.sketch).toEqual([
      2086421588, 2724401372, 1860194788, 3787221403, 2370097256, 529631443, 858180235, 4180048590,
    ]);
  });
});
