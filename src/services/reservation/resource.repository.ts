import { randomUUID } from "node:crypto";
import type { EntityManager } from "@mikro-orm/postgresql";
import { notFound } from "../../platform/errors.js";
import { ResourceSchema, SCHEMA, type ResourceEntity, type ResourceFields } from "./reservation.entity.js";
import { assertEtag } from "../../platform/etag.js";
import { insertEntity, isUniqueViolation, preparedQuery, rowMapper, updateEntity } from "../../platform/db.js";
import { assertSameRequest } from "../../platform/idempotency.js";

export interface ResourceQuery {
  type: string;
  active: boolean | undefined;
  minCapacity: number;
  /** Keyset position: [name, id] of the last row of the previous page. */
  after: [string, string] | undefined;
  limit: number;
}

const GET_SQL = `SELECT * FROM "${SCHEMA}".resources WHERE id = $1`;
const fromRow = rowMapper(ResourceSchema);

/** Owns every query on resources. */
export class ResourceRepository {
  constructor(private readonly em: EntityManager) {}

  /** Read by every booking: one prepared statement, no hydration. */
  async get(id: string): Promise<ResourceEntity> {
    const [row] = await preparedQuery(this.em, "reservation.get-resource", GET_SQL, [id]);
    if (!row) throw notFound("resource", id);
    return fromRow(row);
  }

  /** Creates a resource, or returns the one an earlier call with this request id (and the same request) created. */
  async create(fields: ResourceFields, requestId: string, fingerprint: string, now: Date): Promise<ResourceEntity> {
    const earlier = async () => {
      const resource = requestId ? await this.em.fork().findOne(ResourceSchema, { requestId }) : null;
      if (resource) assertSameRequest(resource.requestFingerprint, fingerprint);
      return resource;
    };
    const first = await earlier();
    if (first) return first;
    try {
      return await insertEntity(this.em.fork(), ResourceSchema, {
        ...fields,
        id: randomUUID(),
        version: 1,
        requestId: requestId || null,
        requestFingerprint: requestId ? fingerprint : null,
        createdAt: now,
        updatedAt: now,
      });
    } catch (err) {
      // A concurrent retry with the same request id won the race.
      if (isUniqueViolation(err)) {
        const winner = await earlier();
        if (winner) return winner;
      }
      throw err;
    }
  }

  async update(id: string, etag: string, change: (r: ResourceEntity) => void, now: Date): Promise<ResourceEntity> {
    const em = this.em.fork();
    const resource = await em.findOne(ResourceSchema, { id });
    if (!resource) throw notFound("resource", id);
    assertEtag("resource", resource, etag);
    // The version check turns a concurrent change into ABORTED.
    await updateEntity(em, resource, (r) => {
      change(r);
      r.updatedAt = now;
    });
    return resource;
  }

  async list(q: ResourceQuery): Promise<ResourceEntity[]> {
    const qb = this.em.fork().createQueryBuilder(ResourceSchema, "r").select("*");
    if (q.type) qb.andWhere({ type: q.type });
    if (q.active !== undefined) qb.andWhere({ active: q.active });
    if (q.minCapacity > 0) qb.andWhere({ capacity: { $gte: q.minCapacity } });
    if (q.after) qb.andWhere("(r.name, r.id) > (?, ?)", q.after);
    return qb.orderBy({ "r.name": "asc", "r.id": "asc" }).limit(q.limit).getResult();
  }

  /** Active resources of a type, big enough, with no active reservation overlapping [start, end). */
  async available(type: string, partySize: number, start: Date, end: Date, now: Date, after: [string, string] | undefined, limit: number) {
    const em = this.em.fork();
    const rows = await em.execute(
      `SELECT r.* FROM "${SCHEMA}".resources r
        WHERE r.active AND r.type = ? AND r.capacity >= ?
          AND NOT EXISTS (
            SELECT 1 FROM "${SCHEMA}".reservations x
             WHERE x.resource_id = r.id
               AND (x.status = 'confirmed' OR (x.status = 'pending' AND x.hold_expires_at > ?))
               AND x.during && tstzrange(?, ?, '[)'))
          AND (?::text IS NULL OR (r.name, r.id) > (?::text, ?::uuid))
        ORDER BY r.name, r.id
        LIMIT ?`,
      [type, partySize, now, start, end, after?.[0] ?? null, after?.[0] ?? "", after?.[1] ?? "00000000-0000-0000-0000-000000000000", limit],
    );
    return rows.map((r) => em.map(ResourceSchema, r));
  }
}
