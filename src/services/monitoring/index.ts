import { AlertEventSchema, MonitoringService } from "../../../gen/agora/monitoring/v1/monitoring_pb.js";
import { closeServiceDatabase, openServiceDatabase, ping } from "../../platform/db.js";
import { protobufCodec, serviceEventLog } from "../../platform/event-log.js";
import { every } from "../../platform/periodic.js";
import type { ServiceModule } from "../../platform/service-module.js";
import { AlertEvaluator } from "./alert.evaluator.js";
import { AlertRepository } from "./alert.repository.js";
import { Ingestor } from "./ingest.js";
import { MetricsRepository, SCHEMA } from "./metrics.repository.js";
import { Migration20261122000000 } from "./migrations/Migration20261122000000.js";
import { Migration20261125180000 } from "./migrations/Migration20261125180000.js";
import { Migration20261127160000 } from "./migrations/Migration20261127160000.js";
import { toAlertEvent } from "./monitoring.mapper.js";
import { monitoringHandlers } from "./monitoring.service.js";

const DAY_MS = 86_400_000;

export const monitoringModule: ServiceModule = {
  name: "monitoring",
  services: [MonitoringService],
  adminMethods: ["DeleteHost", "CreateAlertRule", "UpdateAlertRule", "DeleteAlertRule", "CreateSilence", "DeleteSilence"].map((m) => `${MonitoringService.typeName}/${m}`),
  async start({ config, databaseUrl, log, pubsub, clock, pageTokens }) {
    const settings = config.monitoring;
    const orm = await openServiceDatabase({
      url: databaseUrl,
      schema: SCHEMA,
      entities: [],
      migrations: [Migration20261122000000, Migration20261125180000, Migration20261127160000],
      poolSize: config.dbPoolSize,
      log,
    });
    const events = serviceEventLog({ config, pubsub, log, clock }, orm.em, SCHEMA, protobufCodec(AlertEventSchema));
    await events.start();
    const metrics = new MetricsRepository(orm.em);
    const alerts = new AlertRepository(orm.em, events, toAlertEvent);
    const handlers = monitoringHandlers({
      pageTokens,
      metrics,
      alerts,
      ingestor: new Ingestor(metrics, clock),
      events,
      config: settings,
      clock,
    });

    // Every instance ticks; one at a time evaluates (see AlertEvaluator).
    const evaluator = new AlertEvaluator(metrics, alerts, clock, { hostDownMs: settings.hostDownSeconds * 1000 });
    const evaluation = every(settings.evaluateIntervalMs, log, "alert evaluation", async () => {
      await evaluator.run();
    });
    // Retention deletes are idempotent, so every instance may run them.
    const retention = every(10 * 60_000, log, "metrics retention", async () => {
      const now = clock.now().getTime();
      const removed = await metrics.prune({
        raw: new Date(now - settings.rawRetentionHours * 3_600_000),
        minute: new Date(now - settings.minuteRetentionDays * DAY_MS),
        hour: new Date(now - settings.hourRetentionDays * DAY_MS),
      });
      if (removed > 0) log.info({ removed }, "expired metric data removed");
    });

    return {
      register: (router) => router.service(MonitoringService, handlers),
      ping: () => ping(orm),
      stop: async () => {
        await Promise.all([evaluation.stop(), retention.stop()]);
        events.stop();
        await closeServiceDatabase(orm);
      },
    };
  },
};
