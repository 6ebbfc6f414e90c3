import { InventoryService, ProductEventSchema } from "../../../gen/agora/inventory/v1/inventory_pb.js";
import { closeServiceDatabase, openServiceDatabase, ping } from "../../platform/db.js";
import { protobufCodec, serviceEventLog } from "../../platform/event-log.js";
import type { ServiceModule } from "../../platform/service-module.js";
import { inventoryHandlers } from "./inventory.service.js";
import { Migration20261121000000 } from "./migrations/Migration20261121000000.js";
import { Migration20261125180000 } from "./migrations/Migration20261125180000.js";
import { Migration20261127000000 } from "./migrations/Migration20261127000000.js";
import { Migration20261127110000 } from "./migrations/Migration20261127110000.js";
import { ProductSchema, SCHEMA, StockMovementSchema } from "./product.entity.js";
import { ProductRepository } from "./product.repository.js";

export const inventoryModule: ServiceModule = {
  name: "inventory",
  services: [InventoryService],
  adminMethods: ["CreateProduct", "UpdateProduct", "DeleteProduct", "AdjustStock"].map((m) => `${InventoryService.typeName}/${m}`),
  async start({ config, databaseUrl, log, pubsub, clock, pageTokens }) {
    const orm = await openServiceDatabase({
      url: databaseUrl,
      schema: SCHEMA,
      entities: [ProductSchema, StockMovementSchema],
      migrations: [Migration20261121000000, Migration20261125180000, Migration20261127000000, Migration20261127110000],
      poolSize: config.dbPoolSize,
      log,
    });
    const events = serviceEventLog({ config, pubsub, log, clock }, orm.em, SCHEMA, protobufCodec(ProductEventSchema));
    await events.start();
    const products = new ProductRepository(orm.em, events, clock);
    return {
      register: (router) => router.service(InventoryService, inventoryHandlers(products, events, pageTokens)),
      ping: () => ping(orm),
      stop: async () => {
        events.stop();
        await closeServiceDatabase(orm);
      },
    };
  },
};
