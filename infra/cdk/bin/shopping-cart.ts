#!/usr/bin/env node
// The shopping cart (functions/examples/shopping-cart) on AWS with StatefunDeployment, the twin of
// infra/terraform/examples/shopping-cart: the `cart` and `inventory` functions in one Lambda function,
// a worker on Fargate, ingress streams add-to-cart and restock, egress streams cart-results and
// inventory-updates (the names the functions write to).
//
// Two stacks, as the Terraform example's two applies: `<name>-image-repository` holds the ECR
// repository the runtime image is pushed to, `<name>` the deployment, whose image defaults to that
// repository's `latest` tag. Settings come from context (`-c key=value`), each with a default, and
// nothing is looked up, so `cdk synth` works offline and without credentials:
//
//   name (shopping-cart), region (us-east-1), partitions (4), desiredCount (1),
//   image (<account>.dkr.ecr.<region>.<suffix>/<name>-runtime:<imageTag>), imageTag (latest),
//   workerCpuArchitecture (ARM64),
//   artifact (../../target/lambda/shopping-cart/bootstrap.zip: a zip or a directory with `bootstrap`),
//   vpcId and subnetIds (comma-separated; without them a new VPC with public subnets only, and the
//   worker gets a public IP: no NAT gateway to pay for), assignPublicIp (false, with subnetIds),
//   alarmActions (comma-separated ARNs), forceDestroy (true), deadLetterDestination (stream),
//   deadLetterExpirationDays (30).

import * as fs from 'node:fs';
import * as path from 'node:path';
import { App, Aws, CfnOutput, RemovalPolicy, Stack, StackProps, Tags, aws_ec2 as ec2, aws_ecr as ecr } from 'aws-cdk-lib';
import { Construct } from 'constructs';
import { StatefunDeployment } from '../lib';

// dist/bin -> infra/cdk -> the repository root.
const REPO_ROOT = path.resolve(__dirname, '..', '..', '..', '..');

/** The example's settings, each with the Terraform example's default. */
export interface ShoppingCartSettings {
  readonly name: string;
  readonly partitions: number;
  readonly desiredCount: number;
  readonly image?: string;
  readonly imageTag: string;
  readonly workerCpuArchitecture: 'ARM64' | 'X86_64';
  readonly artifact: string;
  readonly vpcId?: string;
  readonly subnetIds: string[];
  readonly assignPublicIp: boolean;
  readonly alarmActions: string[];
  readonly forceDestroy: boolean;
  readonly deadLetterDestination: 'stream' | 'objects';
  readonly deadLetterExpirationDays: number;
}

/** The ECR repository of the runtime image: deployed first, so the image can be pushed before the workers start. */
export class ImageRepositoryStack extends Stack {
  readonly repository: ecr.Repository;

  constructor(scope: Construct, id: string, props: StackProps & { name: string }) {
    super(scope, id, props);
    this.repository = new ecr.Repository(this, 'Runtime', {
      repositoryName: `${props.name}-runtime`,
      imageTagMutability: ecr.TagMutability.MUTABLE,
      imageScanOnPush: true,
      encryption: ecr.RepositoryEncryption.AES_256,
      // Deleting the stack deletes the images too (Terraform: force_delete).
      removalPolicy: RemovalPolicy.DESTROY,
      emptyOnDelete: true,
      lifecycleRules: [{ rulePriority: 1, description: 'Keep the 10 most recent images', maxImageCount: 10 }],
    });
    new CfnOutput(this, 'ImageRepositoryUrl', { description: 'Push the runtime image here.', value: this.repository.repositoryUri });
  }
}

/** The shopping cart's deployment. */
export class ShoppingCartStack extends Stack {
  readonly deployment: StatefunDeployment;

  constructor(scope: Construct, id: string, props: StackProps & { settings: ShoppingCartSettings }) {
    super(scope, id, props);
    const s = props.settings;

    // Built from its name rather than read from the repository stack, so this stack imports nothing
    // and its template shows the execution role's policy in full.
    const repositoryName = `${s.name}-runtime`;
    const repositoryArn = `arn:${Aws.PARTITION}:ecr:${this.region}:${this.account}:repository/${repositoryName}`;
    const image = s.image ?? `${this.account}.dkr.ecr.${this.region}.${Aws.URL_SUFFIX}/${repositoryName}:${s.imageTag}`;

    if (!fs.existsSync(s.artifact)) {
      throw new Error(
        `The functions' Lambda artifact ${s.artifact} does not exist: build it with ` +
          '`cargo lambda build --release --arm64 --output-format zip -p shopping-cart`, or pass -c artifact=<zip or directory>.',
      );
    }

    let network: { vpc: ec2.IVpc; vpcSubnets: ec2.SubnetSelection; assignPublicIp: boolean } | { vpcId: string; subnetIds: string[]; assignPublicIp: boolean };
    if (s.subnetIds.length > 0) {
      if (s.vpcId === undefined) throw new Error('subnetIds needs vpcId (-c vpcId=vpc-...).');
      network = { vpcId: s.vpcId, subnetIds: s.subnetIds, assignPublicIp: s.assignPublicIp };
    } else {
      // The Terraform example uses the default VPC, which only a lookup could find: this one is made
      // here instead, with public subnets only, and the worker reaches the AWS APIs by a public IP.
      const vpc = new ec2.Vpc(this, 'Vpc', {
        maxAzs: 2,
        natGateways: 0,
        subnetConfiguration: [{ name: 'public', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 24 }],
        // The workers have their own security group; leaving the default one alone needs no custom resource.
        restrictDefaultSecurityGroup: false,
      });
      network = { vpc, vpcSubnets: { subnetType: ec2.SubnetType.PUBLIC }, assignPublicIp: true };
    }

    this.deployment = new StatefunDeployment(this, 'Statefun', {
      name: s.name,
      partitions: s.partitions,
      ingressStreams: {
        'add-to-cart': { valueType: 'type.googleapis.com/shoppingcart.AddToCart', targets: ['shoppingcart/cart'] },
        restock: { valueType: 'type.googleapis.com/shoppingcart.RestockItem', targets: ['shoppingcart/inventory'] },
      },
      ingressId: 'shoppingcart/ingress',
      egressStreams: ['cart-results', 'inventory-updates'],
      egressIds: ['shoppingcart/kinesis'],
      functions: {
        functions: { code: s.artifact, functionTypes: ['shoppingcart/*'], architecture: 'arm64', memoryMb: 256, timeoutSeconds: 30 },
      },
      image,
      imageRepositoryArn: repositoryArn,
      cpuArchitecture: s.workerCpuArchitecture,
      cpu: 512,
      memoryMb: 1024,
      desiredCount: s.desiredCount,
      ...network,
      deadLetterDestination: s.deadLetterDestination,
      deadLetterExpirationDays: s.deadLetterExpirationDays,
      alarmActions: s.alarmActions,
      forceDestroy: s.forceDestroy,
    });

    const d = this.deployment;
    new CfnOutput(this, 'StatefunEnvironment', {
      description: 'STATEFUN_* variables for `statefun send/tail/state/dead-letters` against this deployment.',
      value: this.toJsonString(d.statefunEnvironment),
    });
    new CfnOutput(this, 'ModuleYaml', {
      description: 'The module.yaml the workers run with (`statefun send --module` needs it to encode records).',
      value: d.moduleYaml,
    });
    new CfnOutput(this, 'TableName', { value: d.table.tableName });
    new CfnOutput(this, 'BucketName', { value: d.bucket.bucketName });
    new CfnOutput(this, 'ClusterName', { value: d.cluster.clusterName });
    new CfnOutput(this, 'ServiceName', { value: d.service.serviceName });
    new CfnOutput(this, 'WorkerLogGroup', { value: d.workerLogGroup.logGroupName });
    new CfnOutput(this, 'WorkerTaskRoleArn', { value: d.taskRole.roleArn });
    new CfnOutput(this, 'DashboardUrl', {
      value: `https://${this.region}.console.aws.amazon.com/cloudwatch/home?region=${this.region}#dashboards/dashboard/${s.name}`,
    });
  }
}

/** Reads the settings from the app's context, with the Terraform example's defaults. */
export function settingsFromContext(app: App): ShoppingCartSettings {
  const ctx = (key: string): string | undefined => {
    const v = app.node.tryGetContext(key);
    return v === undefined || v === null || v === '' ? undefined : String(v);
  };
  const num = (key: string, dflt: number) => {
    const v = ctx(key);
    if (v === undefined) return dflt;
    const n = Number(v);
    if (!Number.isFinite(n)) throw new Error(`context ${key}: ${v} is not a number`);
    return n;
  };
  const bool = (key: string, dflt: boolean) => {
    const v = ctx(key);
    if (v === undefined) return dflt;
    if (v !== 'true' && v !== 'false') throw new Error(`context ${key}: ${v} is not true or false`);
    return v === 'true';
  };
  const list = (key: string) => (ctx(key) ?? '').split(',').map((x) => x.trim()).filter((x) => x !== '');
  const artifact = ctx('artifact');
  return {
    name: ctx('name') ?? 'shopping-cart',
    partitions: num('partitions', 4),
    desiredCount: num('desiredCount', 1),
    image: ctx('image'),
    imageTag: ctx('imageTag') ?? 'latest',
    workerCpuArchitecture: (ctx('workerCpuArchitecture') ?? 'ARM64') as 'ARM64' | 'X86_64',
    artifact: artifact ? path.resolve(artifact) : path.join(REPO_ROOT, 'target', 'lambda', 'shopping-cart', 'bootstrap.zip'),
    vpcId: ctx('vpcId'),
    subnetIds: list('subnetIds'),
    assignPublicIp: bool('assignPublicIp', false),
    alarmActions: list('alarmActions'),
    forceDestroy: bool('forceDestroy', true),
    deadLetterDestination: (ctx('deadLetterDestination') ?? 'stream') as 'stream' | 'objects',
    deadLetterExpirationDays: num('deadLetterExpirationDays', 30),
  };
}

/** The app: both stacks in one region (the account is left to deploy time: nothing is looked up). */
export function buildApp(app: App): { repository: ImageRepositoryStack; deployment: ShoppingCartStack } {
  const settings = settingsFromContext(app);
  const region = (app.node.tryGetContext('region') as string | undefined) ?? 'us-east-1';
  const env = { region };
  const repository = new ImageRepositoryStack(app, `${settings.name}-image-repository`, { env, name: settings.name });
  const deployment = new ShoppingCartStack(app, settings.name, { env, settings });
  deployment.addStackDependency(repository, 'the image is pushed to the repository before the workers start');
  Tags.of(app).add('statefun:example', 'shopping-cart');
  return { repository, deployment };
}

if (require.main === module) {
  const app = new App();
  buildApp(app);
  app.synth();
}
