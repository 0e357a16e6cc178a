import { cp, mkdir, readdir, readFile, rename, rm, statfs, writeFile } from "node:fs/promises";
import { join } from "node:path";

/** What the driver remembers of a volume, one JSON file per volume beside its directory. */
export interface VolumeRecord {
  readonly volume_id: string;
  readonly name: string;
  /** Decimal, as int64 travels. */
  readonly capacity_bytes: string;
  readonly parameters: Readonly<Record<string, string>>;
  readonly accessible_topology: ReadonlyArray<Readonly<Record<string, string>>>;
  readonly source_volume_id: string | undefined;
  /**
   * Names of the secrets CreateVolume carried, sorted: enough for tests to see that the provisioner
   * secret arrived. Values are never written to disk. Absent in records from older versions.
   */
  readonly secret_keys?: ReadonlyArray<string>;
  readonly created_at: string;
}

const isRecord = (value: unknown): value is VolumeRecord => {
  const v = value as Partial<VolumeRecord> | null;
  return (
    typeof v === "object" &&
    v !== null &&
    typeof v.volume_id === "string" &&
    typeof v.name === "string" &&
    typeof v.capacity_bytes === "string" &&
    /^\d+$/.test(v.capacity_bytes)
  );
};

/**
 * Volumes under one root: `<root>/<id>/` is the volume, `<root>/<id>.json` its metadata. The
 * metadata is written after the directory and removed after it, and atomically (rename), so a crash
 * at any point leaves either a whole volume or an orphan directory that no metadata claims.
 */
export class VolumeStore {
  private constructor(
    readonly root: string,
    private readonly volumes: Map<string, VolumeRecord>,
  ) {}

  static async open(root: string): Promise<VolumeStore> {
    await mkdir(root, { recursive: true });
    const volumes = new Map<string, VolumeRecord>();
    for (const entry of await readdir(root)) {
      if (!entry.endsWith(".json")) continue;
      try {
        const record: unknown = JSON.parse(await readFile(join(root, entry), "utf8"));
        if (isRecord(record) && `${record.volume_id}.json` === entry) {
          volumes.set(record.volume_id, record);
        }
      } catch {
        // A file we did not write (or a torn temporary one): not a volume.
      }
    }
    return new VolumeStore(root, volumes);
  }

  dirOf(volumeId: string): string {
    return join(this.root, volumeId);
  }

  get(volumeId: string): VolumeRecord | undefined {
    return this.volumes.get(volumeId);
  }

  byName(name: string): VolumeRecord | undefined {
    for (const record of this.volumes.values()) if (record.name === name) return record;
    return undefined;
  }

  list(): ReadonlyArray<VolumeRecord> {
    return [...this.volumes.values()];
  }

  usedBytes(): bigint {
    let used = 0n;
    for (const record of this.volumes.values()) used += BigInt(record.capacity_bytes);
    return used;
  }

  /** Free bytes of the file system under the root, for a driver without --capacity. */
  async freeBytes(): Promise<bigint> {
    const stats = await statfs(this.root, { bigint: true });
    return stats.bavail * stats.bsize;
  }

  async add(record: VolumeRecord, copyFrom?: string): Promise<void> {
    const dir = this.dirOf(record.volume_id);
    await mkdir(dir, { recursive: true });
    if (copyFrom !== undefined) await cp(this.dirOf(copyFrom), dir, { recursive: true });
    const file = join(this.root, `${record.volume_id}.json`);
    await writeFile(`${file}.tmp`, `${JSON.stringify(record, null, 2)}\n`);
    await rename(`${file}.tmp`, file);
    this.volumes.set(record.volume_id, record);
  }

  async remove(volumeId: string): Promise<void> {
    await rm(this.dirOf(volumeId), { recursive: true, force: true });
    await rm(join(this.root, `${volumeId}.json`), { force: true });
    this.volumes.delete(volumeId);
  }
}
