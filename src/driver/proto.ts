import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import type { ProtoGrpcType } from "../generated/csi/csi.js";
import { packageFile } from "../PackageFiles.js";

export const csiProtoPath = packageFile("proto/csi.proto");

// The same options as the sidecar's client (src/layers/CsiGrpc.ts) and as `npm run gen:proto`:
// the generated handler types describe objects in exactly this shape.
export const loadCsiProto = (): ProtoGrpcType =>
  grpc.loadPackageDefinition(
    protoLoader.loadSync(csiProtoPath, {
      keepCase: true,
      longs: String,
      enums: String,
      defaults: true,
      oneofs: true,
    }),
  ) as unknown as ProtoGrpcType;
