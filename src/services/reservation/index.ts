import { NotificationSchema as NotificationMessageSchema, ReservationService } from "../../../gen/agora/reservation/v1/reservation_pb.js";
import { closeServiceDatabase, openServiceDatabase, ping } from "../../platform/db.js";
import { protobufCodec, serviceEventLog } from "../../platform/event-log.js";
import { every } from "../../platform/periodic.js";
import type { ServiceModule } from "../../platform/service-module.js";
import { Migration20261121200000 } from "./migrations/Migration20261121200000.js";
import { Migration20261125180000 } from "./migrations/Migration20261125180000.js";
import { Migration20261127100000 } from "./migrations/Migration20261127100000.js";
import { NotificationRepository } from "./notification.repository.js";
import { NotificationSchema, ReservationSchema, ResourceSchema, SCHEMA } from "./reservation.entity.js";
import { ReservationRepository } from "./reservation.repository.js";
import { reservationHandlers } from "./reservation.service.js";
import { ResourceRepository } from "./resource.repository.js";

export const reservationModule: ServiceModule = {
  name: "reservation",
  services: [ReservationService],
  adminMethods: ["CreateResource", "UpdateResource", "ConfirmReservation", "RejectReservation"].map((m) => `${ReservationService.typeName}/${m}`),
  async start({ config, databaseUrl, log, pubsub, clock, pageTokens }) {
    const orm = await openServiceDatabase({
      url: databaseUrl,
      schema: SCHEMA,
      entities: [ResourceSchema, ReservationSchema, NotificationSchema],
      migrations: [Migration20261121200000, Migration20261125180000, Migration20261127100000],
      poolSize: config.dbPoolSize,
      log,
    });
    const events = serviceEventLog({ config, pubsub, log, clock }, orm.em, SCHEMA, protobufCodec(NotificationMessageSchema));
    await events.start();
    const notifications = new NotificationRepository(orm.em, events);
    const reservations = new ReservationRepository(orm.em, notifications, config.reservation.pendingHoldMinutes);
    const handlers = reservationHandlers({
      pageTokens,
      resources: new ResourceRepository(orm.em),
      reservations,
      notifications,
      events,
      config: config.reservation,
      clock,
    });

    // Every instance sweeps; row locks (SKIP LOCKED) make each reminder and expiry happen once.
    let sweeps = 0;
    const sweeper = every(config.reservation.schedulerIntervalMs, log, "reservation sweep", async () => {
      const now = clock.now();
      await reservations.expireHolds(now);
      await reservations.sendReminders(now, config.reservation.reminderLeadMinutes);
      if (++sweeps % 100 === 0) await reservations.pruneInterests(now);
    });

    return {
      register: (router) => router.service(ReservationService, handlers),
      ping: () => ping(orm),
      stop: async () => {
        await sweeper.stop();
        events.stop();
        await closeServiceDatabase(orm);
      },
    };
  },
};
