// StatefunDeployment: a whole deployment of the runtime on AWS, the CDK twin of the Terraform module
// infra/terraform/modules/statefun (with modules/statefun-storage). Same resources, names, defaults
// and IAM scopes; the list of those shared choices is in ../README.md ("Choices shared with the
// Terraform module") and must be kept in step with the Terraform module.
//
//   storage    the ingress, egress, exchange and dead-letter streams, the lease and commit table,
//              the checkpoint bucket
//   functions  one Lambda function per entry of `functions`, a version published from its code and
//              an alias the runtime invokes by
//   worker     an ECS Fargate service running the runtime's image (`statefun run`) with the
//              module.yaml generated here
//   iam        the worker's task role: only this deployment's streams, table, checkpoint prefix and
//              function aliases; its execution role: its log group and image; the functions' roles:
//              only their own log groups
//   alarms     iterator age, commit failures, dead letters, stuck partitions
//   dashboard  the metrics the workers publish (embedded metric format in their log) and the
//              streams' iterator age
//
// Every policy names its resources by ARNs built from names (as the Terraform module does), so the
// synthesized template shows what each role may do without depending on the resources, and no
// policy statement on a data-plane action has a wildcard resource. The CDK grant* helpers are not
// used for that reason.

import {
  Duration,
  Fn,
  RemovalPolicy,
  Stack,
  Tags,
  Token,
  aws_cloudwatch as cloudwatch,
  aws_dynamodb as dynamodb,
  aws_ec2 as ec2,
  aws_ecs as ecs,
  aws_iam as iam,
  aws_kinesis as kinesis,
  aws_lambda as lambda,
  aws_logs as logs,
  aws_s3 as s3,
} from 'aws-cdk-lib';
import { Construct } from 'constructs';
import { ModuleFunction, moduleYaml } from './module-yaml';

/** An ingress stream: the type of its records' values and the function types each record goes to. */
export interface IngressStream {
  /** e.g. "type.googleapis.com/shoppingcart.AddToCart" (Terraform: value_type). */
  readonly valueType: string;
  /** Function types "namespace/name" every record goes to (its id is the record's partition key). */
  readonly targets: string[];
}

/** One Lambda function of the deployment (Terraform: an entry of `functions`). */
export interface StatefunFunction {
  /**
   * The code: a path to a zip with a `bootstrap` executable (as `cargo lambda build --release --arm64
   * --output-format zip` writes to target/lambda/<binary>/bootstrap.zip) or to a directory holding
   * it, or any `lambda.Code` (Terraform: artifact, a zip path).
   */
  readonly code: string | lambda.Code;
  /** module.yaml function-type patterns it serves, e.g. "shoppingcart/*". At least one. */
  readonly functionTypes: string[];
  /** @default 'arm64' */
  readonly architecture?: 'arm64' | 'x86_64';
  /** @default 'bootstrap' */
  readonly handler?: string;
  /** @default lambda.Runtime.PROVIDED_AL2023 */
  readonly runtime?: lambda.Runtime;
  /** @default 256 */
  readonly memoryMb?: number;
  /** @default 30 */
  readonly timeoutSeconds?: number;
  /** @default {} */
  readonly environment?: Record<string, string>;
  /** maxNumBatchRequests of its module.yaml endpoint. @default 1000 */
  readonly maxBatch?: number;
  /** Reserved concurrency; -1 leaves it unreserved. @default -1 */
  readonly concurrencyLimit?: number;
  /** Retention of its log group /aws/lambda/<name>-<key> (0: never expire). @default 14 */
  readonly logRetentionDays?: number;
}

export interface StatefunDeploymentProps {
  // --- the deployment ------------------------------------------------------------------------

  /** Prefixes every resource name: 3 to 32 lower-case letters, digits and hyphens, starting with a letter. */
  readonly name: string;
  /** Partitions; the exchange stream gets exactly one shard each. Fixed for the life of the data. */
  readonly partitions: number;
  /** Tags of every resource. @default {} */
  readonly tags?: Record<string, string>;

  // --- streams, table, bucket ----------------------------------------------------------------

  /** Kinesis ingress streams by name; they make the ingress document of module.yaml. @default {} */
  readonly ingressStreams?: Record<string, IngressStream>;
  /** @default 'statefun/ingress' */
  readonly ingressId?: string;
  /** @default 'earliest' */
  readonly ingressStartupPosition?: 'earliest' | 'latest';
  /** Kinesis egress streams the functions write to. @default [] */
  readonly egressStreams?: string[];
  /** Ids of the Kinesis egresses the functions name (module.yaml egress documents). @default [] */
  readonly egressIds?: string[];
  /** More module.yaml documents appended to the generated ones. @default '' */
  readonly extraModuleDocuments?: string;
  /** Capacity mode of the ingress, egress and dead-letter streams (the exchange is always provisioned). @default 'PROVISIONED' */
  readonly streamMode?: 'PROVISIONED' | 'ON_DEMAND';
  /** Shards of each ingress and egress stream in PROVISIONED mode. @default 1 */
  readonly streamShards?: number;
  /** @default 24 */
  readonly streamRetentionHours?: number;
  /** Encrypt the streams with the AWS managed key alias/aws/kinesis. @default true */
  readonly streamEncryption?: boolean;
  /** "stream" (the dead-letter stream) or "objects" (under <checkpointPrefix>dead-letters/, no stream). @default 'stream' */
  readonly deadLetterDestination?: 'stream' | 'objects';
  /** With "objects": days after which dead-letter objects expire. @default - kept */
  readonly deadLetterExpirationDays?: number;
  /** Create the dead-letter stream; false uses an existing one named deadLetterStreamName. @default true */
  readonly createDeadLetterStream?: boolean;
  /** @default '<name>-dead-letters' */
  readonly deadLetterStreamName?: string;
  /** @default true */
  readonly pointInTimeRecovery?: boolean;
  /** @default false */
  readonly tableDeletionProtection?: boolean;
  /** @default '<name>-checkpoints-<account ID>' */
  readonly bucketName?: string;
  /** Key prefix of the checkpoints: empty or ending in '/'. @default 'statefun/' */
  readonly checkpointPrefix?: string;
  /** @default false */
  readonly bucketVersioning?: boolean;
  /** @default 7 */
  readonly noncurrentVersionDays?: number;
  /**
   * Delete the checkpoint bucket with its objects when the stack is deleted (an auto-delete custom
   * resource); otherwise the bucket is retained. @default false
   */
  readonly forceDestroy?: boolean;

  // --- functions -----------------------------------------------------------------------------

  /** Lambda functions by key (1 to 24 letters, digits, '-', '_'); each is named "<name>-<key>". @default {} */
  readonly functions?: Record<string, StatefunFunction>;
  /** The alias the runtime invokes each function by. @default 'live' */
  readonly functionAlias?: string;
  /** Qualified ARNs of functions deployed elsewhere the workers may invoke (no wildcards). @default [] */
  readonly extraInvokeArns?: string[];

  // --- the workers ---------------------------------------------------------------------------

  /**
   * The runtime's image (built from the repository's Dockerfile): an image URI, or any
   * `ecs.ContainerImage` (whose own pull permissions the CDK then adds to the execution role).
   */
  readonly image: string | ecs.ContainerImage;
  /** ECR repository of a URI `image`: the execution role may pull from it and nothing else. @default - none */
  readonly imageRepositoryArn?: string;
  /** Worker tasks (0 stops processing); at most `partitions`. @default 1 */
  readonly desiredCount?: number;
  /** @default 512 */
  readonly cpu?: number;
  /** @default 1024 */
  readonly memoryMb?: number;
  /** Must match the image. @default 'ARM64' */
  readonly cpuArchitecture?: 'ARM64' | 'X86_64';
  /** The VPC of the workers, with `vpcSubnets`; or give `vpcId` and `subnetIds`. */
  readonly vpc?: ec2.IVpc;
  /** @default - the VPC's private subnets (the CDK default) */
  readonly vpcSubnets?: ec2.SubnetSelection;
  /** Id of the VPC of `subnetIds` (Terraform: vpc_id). */
  readonly vpcId?: string;
  /** Subnets of the worker task (Terraform: subnet_ids). */
  readonly subnetIds?: string[];
  /** More security groups of the worker task. @default [] */
  readonly securityGroups?: ec2.ISecurityGroup[];
  /** More security groups of the worker task, by id. @default [] */
  readonly securityGroupIds?: string[];
  /** @default false */
  readonly assignPublicIp?: boolean;
  /** STATEFUN_COMMIT_INTERVAL. @default '100ms' */
  readonly commitInterval?: string;
  /** STATEFUN_POLL_INTERVAL (Kinesis allows 5 GetRecords calls per second per shard). @default '250ms' */
  readonly pollInterval?: string;
  /** More worker environment variables; they override the generated ones. @default {} */
  readonly workerEnvironment?: Record<string, string>;
  /** @default 30 */
  readonly logRetentionDays?: number;
  /** @default false */
  readonly containerInsights?: boolean;

  // --- metrics, dashboard and alarms ---------------------------------------------------------

  /** Namespace of the metrics the workers publish (dimension Deployment = name). @default 'StatefunAws' */
  readonly metricsNamespace?: string;
  /** STATEFUN_STUCK_AFTER in seconds, 30 or more. @default 120 */
  readonly stuckPartitionSeconds?: number;
  /** Consecutive minutes of a stuck partition before its alarm fires. @default 3 */
  readonly stuckPartitionAlarmMinutes?: number;
  /** ARNs notified when an alarm fires or clears (e.g. SNS topics). @default [] */
  readonly alarmActions?: string[];
  /** @default 60000 */
  readonly iteratorAgeThresholdMs?: number;
  /** Create the CloudWatch dashboard. @default true */
  readonly dashboard?: boolean;
}

/** What the deployment made for one function. */
export interface DeployedFunction {
  readonly function: lambda.Function;
  readonly alias: lambda.Alias;
  /** The qualified ARN the workers invoke, built from names. */
  readonly aliasArn: string;
  readonly role: iam.Role;
  readonly logGroup: logs.LogGroup;
}

// Each phrase is part of a message the runtime logs when a commit goes wrong: alarms.tf's
// commit_failure_phrases, which tests/tests/terraform.rs checks against the runtime's messages (the
// tests here check that the two lists are one).
export const COMMIT_FAILURE_PHRASES = [
  'commit failed',
  'commit of epoch',
  'writing checkpoint',
  'lost its lease',
  'cannot recover',
  'task panicked',
  'ended unexpectedly',
];

// The metrics the workers publish that the dashboard graphs.
const EMF_METRICS = [
  'Invocations', 'InvocationsDeadLettered', 'DeadLetters', 'BacklogMessages', 'IngressLagMaxMilliseconds',
  'Commits', 'PartitionFailures', 'StuckPartitions', 'PartitionsHeld', 'InvocationDurationAverage',
  'IngressRecords', 'EgressRecords',
];

const NAME_RE = /^[a-z][a-z0-9-]{1,30}[a-z0-9]$/;
const STREAM_NAME_RE = /^[a-zA-Z0-9_.-]{1,128}$/;
const FUNCTION_KEY_RE = /^[a-zA-Z0-9_-]{1,24}$/;
const FUNCTION_TYPE_RE = /^[^/]+\/[^/]+$/;
const QUALIFIED_LAMBDA_ARN_RE = /^arn:[^:*]+:lambda:[^:*]+:[0-9]{12}:function:[^:*]+:[^:*]+$/;

// An alarm action given by ARN, as Terraform's alarm_actions are.
class ArnAlarmAction implements cloudwatch.IAlarmAction {
  constructor(private readonly arn: string) {}
  bind(): cloudwatch.AlarmActionConfig {
    return { alarmActionArn: this.arn };
  }
}

/**
 * A deployment of the runtime: its streams, table and bucket, its Lambda functions, the Fargate
 * workers that run `statefun run` on them, least-privilege roles, alarms and a dashboard.
 */
export class StatefunDeployment extends Construct {
  readonly name: string;
  readonly partitions: number;
  /** Every stream this construct created, by name. */
  readonly streams: Record<string, kinesis.Stream> = {};
  readonly exchangeStreamName: string;
  /** Undefined when dead letters are objects. */
  readonly deadLetterStreamName?: string;
  /** `<checkpointPrefix>dead-letters/` when dead letters are objects. */
  readonly deadLetterPrefix?: string;
  readonly table: dynamodb.Table;
  readonly bucket: s3.Bucket;
  readonly bucketName: string;
  readonly checkpointPrefix: string;
  readonly functions: Record<string, DeployedFunction> = {};
  /** The module.yaml the workers run with (`statefun send --module` needs it too). */
  readonly moduleYaml: string;
  /** The STATEFUN_* variables that point the CLI at this deployment (with STATEFUN_REGION). */
  readonly statefunEnvironment: Record<string, string>;
  /** Every environment variable of the worker container. */
  readonly workerEnvironment: Record<string, string>;
  readonly cluster: ecs.Cluster;
  readonly taskDefinition: ecs.FargateTaskDefinition;
  readonly service: ecs.FargateService;
  readonly workerLogGroup: logs.LogGroup;
  readonly workerSecurityGroup: ec2.SecurityGroup;
  readonly taskRole: iam.Role;
  readonly executionRole: iam.Role;
  /** Every alarm, by name. */
  readonly alarms: Record<string, cloudwatch.Alarm> = {};
  readonly dashboard?: cloudwatch.CfnDashboard;

  constructor(scope: Construct, id: string, props: StatefunDeploymentProps) {
    super(scope, id);
    const stack = Stack.of(this);
    const p = withDefaults(props);
    validate(p);

    const name = p.name;
    this.name = name;
    this.partitions = p.partitions;
    for (const [k, v] of Object.entries(p.tags)) {
      Tags.of(this).add(k, v);
    }

    // ARNs built from names, as the Terraform module's locals build them.
    const arnPrefix = `arn:${stack.partition}`;
    const region = stack.region;
    const account = stack.account;
    const streamArn = (s: string) => `${arnPrefix}:kinesis:${region}:${account}:stream/${s}`;

    // --- storage (modules/statefun-storage) ----------------------------------------------------

    const ingressNames = Object.keys(p.ingressStreams).sort();
    this.exchangeStreamName = `${name}-exchange`;
    this.deadLetterStreamName = p.deadLetterDestination === 'stream' ? p.deadLetterStreamName ?? `${name}-dead-letters` : undefined;
    const deadLetterStreams = this.deadLetterStreamName ? [this.deadLetterStreamName] : [];
    const createDeadLetterStream = p.createDeadLetterStream && p.deadLetterDestination === 'stream';

    const streamNames = [...ingressNames, ...p.egressStreams, ...deadLetterStreams, this.exchangeStreamName];
    if (new Set(streamNames).size !== streamNames.length) {
      throw new Error('The ingress, egress, exchange and dead-letter streams must have different names.');
    }

    const makeStream = (streamName: string, role: string, mode: 'PROVISIONED' | 'ON_DEMAND', shards: number) => {
      const stream = new kinesis.Stream(this, `Stream-${streamName}`, {
        streamName,
        streamMode: mode === 'PROVISIONED' ? kinesis.StreamMode.PROVISIONED : kinesis.StreamMode.ON_DEMAND,
        shardCount: mode === 'PROVISIONED' ? shards : undefined,
        retentionPeriod: Duration.hours(p.streamRetentionHours),
        encryption: p.streamEncryption ? kinesis.StreamEncryption.MANAGED : kinesis.StreamEncryption.UNENCRYPTED,
        // Deleting the stack deletes the streams, as terraform destroy does.
        removalPolicy: RemovalPolicy.DESTROY,
      });
      Tags.of(stream).add('statefun:deployment', name);
      Tags.of(stream).add('statefun:role', role);
      this.streams[streamName] = stream;
    };
    for (const s of ingressNames) makeStream(s, 'ingress', p.streamMode, p.streamShards);
    for (const s of p.egressStreams) makeStream(s, 'egress', p.streamMode, p.streamShards);
    if (createDeadLetterStream) makeStream(this.deadLetterStreamName!, 'dead-letters', p.streamMode, 1);
    // The exchange keeps exactly one shard per partition: the runtime refuses to start otherwise.
    makeStream(this.exchangeStreamName, 'exchange', 'PROVISIONED', p.partitions);

    // One item per partition. Only the key is declared: the runtime writes the other attributes.
    const tableName = `${name}-partitions`;
    this.table = new dynamodb.Table(this, 'Partitions', {
      tableName,
      partitionKey: { name: 'partition', type: dynamodb.AttributeType.NUMBER },
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: p.pointInTimeRecovery },
      deletionProtection: p.tableDeletionProtection,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    Tags.of(this.table).add('statefun:deployment', name);

    this.checkpointPrefix = p.checkpointPrefix;
    this.deadLetterPrefix = p.deadLetterDestination === 'objects' ? `${p.checkpointPrefix}dead-letters/` : undefined;
    this.bucketName = p.bucketName ?? `${name}-checkpoints-${account}`;
    // Checkpoints are never expired by a rule (the runtime deletes what a newer snapshot replaced, and
    // a rule could delete one the commit table still names): the rules only clean up unfinished
    // multipart uploads, replaced versions and, if asked, old dead-letter objects.
    const lifecycleRules: s3.LifecycleRule[] = [
      { id: 'abort-incomplete-multipart-uploads', enabled: true, abortIncompleteMultipartUploadAfter: Duration.days(1) },
      {
        id: 'expire-replaced-checkpoint-versions',
        enabled: true,
        prefix: p.checkpointPrefix === '' ? undefined : p.checkpointPrefix,
        noncurrentVersionExpiration: Duration.days(p.noncurrentVersionDays),
        expiredObjectDeleteMarker: true,
      },
    ];
    if (this.deadLetterPrefix !== undefined && p.deadLetterExpirationDays !== undefined) {
      lifecycleRules.push({ id: 'expire-dead-letters', enabled: true, prefix: this.deadLetterPrefix, expiration: Duration.days(p.deadLetterExpirationDays) });
    }
    this.bucket = new s3.Bucket(this, 'Checkpoints', {
      bucketName: this.bucketName,
      encryption: s3.BucketEncryption.S3_MANAGED,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      // Requests without TLS are refused (a Deny s3:* bucket policy on aws:SecureTransport false).
      enforceSSL: true,
      versioned: p.bucketVersioning,
      lifecycleRules,
      // S3 request metrics of the dead-letter prefix (billed as custom metrics), for its alarm.
      metrics: this.deadLetterPrefix !== undefined ? [{ id: 'dead-letters', prefix: this.deadLetterPrefix }] : undefined,
      removalPolicy: p.forceDestroy ? RemovalPolicy.DESTROY : RemovalPolicy.RETAIN,
      autoDeleteObjects: p.forceDestroy,
    });
    Tags.of(this.bucket).add('statefun:deployment', name);

    // --- functions -------------------------------------------------------------------------------

    const accountCondition = { StringEquals: { 'aws:SourceAccount': account } };
    const moduleFunctions: Record<string, ModuleFunction> = {};
    for (const key of Object.keys(p.functions).sort()) {
      const f = p.functions[key];
      const functionName = `${name}-${key}`;
      const aliasArn = `${arnPrefix}:lambda:${region}:${account}:function:${functionName}:${p.functionAlias}`;
      const role = new iam.Role(this, `FunctionRole-${key}`, {
        roleName: `${name}-${key}-fn`,
        description: `Lambda function ${functionName} of statefun deployment ${name}: its own logs only`,
        assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com').withConditions(accountCondition),
        inlinePolicies: {
          logs: new iam.PolicyDocument({
            statements: [
              new iam.PolicyStatement({
                sid: 'OwnLogs',
                actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
                resources: [`${arnPrefix}:logs:${region}:${account}:log-group:/aws/lambda/${functionName}:log-stream:*`],
              }),
            ],
          }),
        },
      });
      const logGroup = new logs.LogGroup(this, `FunctionLogs-${key}`, {
        logGroupName: `/aws/lambda/${functionName}`,
        retention: retentionDays(f.logRetentionDays),
        removalPolicy: RemovalPolicy.DESTROY,
      });
      const fn = new lambda.Function(this, `Function-${key}`, {
        functionName,
        description: `Stateful functions ${f.functionTypes.join(', ')} of statefun deployment ${name}`,
        // The role carries exactly its inline policy: the CDK adds nothing to it.
        role: role.withoutPolicyUpdates(),
        code: typeof f.code === 'string' ? lambda.Code.fromAsset(f.code) : f.code,
        handler: f.handler,
        runtime: f.runtime,
        architecture: f.architecture === 'arm64' ? lambda.Architecture.ARM_64 : lambda.Architecture.X86_64,
        memorySize: f.memoryMb,
        timeout: Duration.seconds(f.timeoutSeconds),
        reservedConcurrentExecutions: f.concurrencyLimit === -1 ? undefined : f.concurrencyLimit,
        environment: Object.keys(f.environment).length > 0 ? f.environment : undefined,
        loggingFormat: lambda.LoggingFormat.TEXT,
        logGroup,
      });
      fn.node.addDependency(role);
      // A version published from the code, and the alias the workers invoke: a new artifact takes
      // effect atomically when the alias moves.
      const alias = new lambda.Alias(this, `Alias-${key}`, {
        aliasName: p.functionAlias,
        description: 'The version the statefun workers invoke',
        version: fn.currentVersion,
      });
      this.functions[key] = { function: fn, alias, aliasArn, role, logGroup };
      moduleFunctions[key] = { functionTypes: f.functionTypes, aliasArn, maxBatch: f.maxBatch, timeoutSeconds: f.timeoutSeconds };
    }

    this.moduleYaml = moduleYaml({
      functions: moduleFunctions,
      ingressStreams: p.ingressStreams,
      ingressId: p.ingressId,
      ingressStartupPosition: p.ingressStartupPosition,
      egressIds: p.egressIds,
      extraDocuments: p.extraModuleDocuments,
    });

    // --- IAM (iam.tf) ----------------------------------------------------------------------------

    const tableArn = `${arnPrefix}:dynamodb:${region}:${account}:table/${tableName}`;
    const bucketArn = `${arnPrefix}:s3:::${this.bucketName}`;
    const workerLogGroupName = `/ecs/${name}-worker`;
    const inputStreamArns = [...ingressNames, this.exchangeStreamName].map(streamArn);
    const outputStreamArns = [this.exchangeStreamName, ...p.egressStreams, ...deadLetterStreams].map(streamArn);
    const invokeArns = [...Object.keys(this.functions).sort().map((k) => this.functions[k].aliasArn), ...p.extraInvokeArns];

    const workerStatements = [
      new iam.PolicyStatement({
        sid: 'ReadInputStreams',
        actions: ['kinesis:DescribeStreamSummary', 'kinesis:ListShards', 'kinesis:GetShardIterator', 'kinesis:GetRecords'],
        resources: inputStreamArns,
      }),
      new iam.PolicyStatement({
        sid: 'WriteOutputStreams',
        actions: ['kinesis:DescribeStreamSummary', 'kinesis:ListShards', 'kinesis:PutRecord', 'kinesis:PutRecords'],
        resources: outputStreamArns,
      }),
      new iam.PolicyStatement({
        sid: 'LeasesAndCommits',
        actions: ['dynamodb:DescribeTable', 'dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem'],
        resources: [tableArn],
      }),
      // The checkpoint prefix holds the dead-letter objects too, when dead letters are objects.
      new iam.PolicyStatement({
        sid: 'CheckpointObjects',
        actions: ['s3:GetObject', 's3:PutObject', 's3:DeleteObject', 's3:AbortMultipartUpload', 's3:ListMultipartUploadParts'],
        resources: [`${bucketArn}/${p.checkpointPrefix}*`],
      }),
      new iam.PolicyStatement({
        sid: 'ListCheckpoints',
        actions: ['s3:ListBucket'],
        resources: [bucketArn],
        conditions: p.checkpointPrefix === '' ? undefined : { StringLike: { 's3:prefix': `${p.checkpointPrefix}*` } },
      }),
    ];
    if (invokeArns.length > 0) {
      workerStatements.push(new iam.PolicyStatement({ sid: 'InvokeFunctions', actions: ['lambda:InvokeFunction'], resources: invokeArns }));
    }
    const ecsTasks = new iam.ServicePrincipal('ecs-tasks.amazonaws.com').withConditions(accountCondition);
    this.taskRole = new iam.Role(this, 'WorkerTaskRole', {
      roleName: `${name}-worker-task`,
      description: `statefun workers of deployment ${name}: its streams, table, checkpoints and functions only`,
      assumedBy: ecsTasks,
      inlinePolicies: { 'statefun-worker': new iam.PolicyDocument({ statements: workerStatements }) },
    });

    const executionStatements = [
      new iam.PolicyStatement({
        sid: 'WorkerLogs',
        actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
        resources: [`${arnPrefix}:logs:${region}:${account}:log-group:${workerLogGroupName}:log-stream:*`],
      }),
    ];
    if (p.imageRepositoryArn !== undefined) {
      executionStatements.push(
        new iam.PolicyStatement({
          sid: 'PullImage',
          actions: ['ecr:BatchCheckLayerAvailability', 'ecr:GetDownloadUrlForLayer', 'ecr:BatchGetImage'],
          resources: [p.imageRepositoryArn],
        }),
        // GetAuthorizationToken has no resource-level permissions: "*" is the only resource it takes.
        new iam.PolicyStatement({ sid: 'RegistryLogin', actions: ['ecr:GetAuthorizationToken'], resources: ['*'] }),
      );
    }
    this.executionRole = new iam.Role(this, 'WorkerExecutionRole', {
      roleName: `${name}-worker-execution`,
      description: `ECS, for the statefun workers of deployment ${name}: pull the image, write the logs`,
      assumedBy: ecsTasks,
      inlinePolicies: { 'pull-and-log': new iam.PolicyDocument({ statements: executionStatements }) },
    });

    // --- the workers (worker.tf) -------------------------------------------------------------------

    this.statefunEnvironment = {
      STATEFUN_BACKEND: 'aws',
      STATEFUN_TABLE: tableName,
      STATEFUN_BUCKET: this.bucketName,
      STATEFUN_PREFIX: p.checkpointPrefix,
      STATEFUN_EXCHANGE_STREAM: this.exchangeStreamName,
      STATEFUN_PARTITIONS: String(p.partitions),
      STATEFUN_DEAD_LETTER_DESTINATION: p.deadLetterDestination,
      ...(this.deadLetterStreamName ? { STATEFUN_DEAD_LETTER_STREAM: this.deadLetterStreamName } : {}),
      STATEFUN_REGION: region,
    };
    this.workerEnvironment = {
      ...this.statefunEnvironment,
      STATEFUN_COMMIT_INTERVAL: p.commitInterval,
      STATEFUN_POLL_INTERVAL: p.pollInterval,
      // The image's entrypoint (infra/docker/entrypoint.sh) writes it to a file for STATEFUN_MODULE.
      STATEFUN_MODULE_YAML: this.moduleYaml,
      STATEFUN_LOG: 'info',
      NO_COLOR: '1',
      // Every minute, one line of CloudWatch embedded metric format on stdout: the awslogs driver
      // ships it with the log, and CloudWatch extracts the metrics of the dashboard and the
      // stuck-partitions alarm from it (no agent, no sidecar).
      STATEFUN_METRICS_EMF: 'true',
      STATEFUN_METRICS_EMF_NAMESPACE: p.metricsNamespace,
      STATEFUN_METRICS_EMF_DEPLOYMENT: name,
      STATEFUN_STUCK_AFTER: `${p.stuckPartitionSeconds}s`,
      ...p.workerEnvironment,
    };

    this.workerLogGroup = new logs.LogGroup(this, 'WorkerLogs', {
      logGroupName: workerLogGroupName,
      retention: retentionDays(p.logRetentionDays),
      removalPolicy: RemovalPolicy.DESTROY,
    });

    let vpc: ec2.IVpc;
    let subnets: ec2.SubnetSelection | undefined;
    if (p.vpc !== undefined) {
      vpc = p.vpc;
      subnets = p.vpcSubnets;
    } else {
      // Only the VPC's id and the subnets' ids are known: nothing is looked up. The zones are the
      // region's, left to CloudFormation; no subnet is chosen by zone, as the subnets are given.
      vpc = ec2.Vpc.fromVpcAttributes(this, 'Vpc', { vpcId: p.vpcId!, availabilityZones: Fn.getAzs() });
      subnets = { subnets: p.subnetIds!.map((s, i) => ec2.Subnet.fromSubnetId(this, `Subnet${i}`, s)) };
    }

    this.cluster = new ecs.Cluster(this, 'Cluster', {
      clusterName: name,
      vpc,
      containerInsightsV2: p.containerInsights ? ecs.ContainerInsights.ENABLED : ecs.ContainerInsights.DISABLED,
    });

    const image = typeof p.image === 'string' ? ecs.ContainerImage.fromRegistry(p.image) : p.image;
    this.taskDefinition = new ecs.FargateTaskDefinition(this, 'WorkerTask', {
      family: `${name}-worker`,
      cpu: p.cpu,
      memoryLimitMiB: p.memoryMb,
      runtimePlatform: {
        operatingSystemFamily: ecs.OperatingSystemFamily.LINUX,
        cpuArchitecture: p.cpuArchitecture === 'ARM64' ? ecs.CpuArchitecture.ARM64 : ecs.CpuArchitecture.X86_64,
      },
      // Both roles carry exactly their inline policies. Only a ContainerImage (an ECR or asset image)
      // may add its own pull permissions to the execution role, as it needs them.
      taskRole: this.taskRole.withoutPolicyUpdates(),
      executionRole: typeof p.image === 'string' ? this.executionRole.withoutPolicyUpdates() : this.executionRole,
    });
    this.taskDefinition.addContainer('worker', {
      containerName: 'worker',
      image,
      essential: true,
      command: ['run'],
      environment: this.workerEnvironment,
      // A worker stopped with SIGTERM commits and releases its partitions within this time.
      stopTimeout: Duration.seconds(60),
      logging: ecs.LogDrivers.awsLogs({ logGroup: this.workerLogGroup, streamPrefix: 'worker' }),
    });

    this.workerSecurityGroup = new ec2.SecurityGroup(this, 'WorkerSecurityGroup', {
      vpc,
      securityGroupName: `${name}-worker`,
      description: `statefun workers of ${name}: no inbound, outbound to the AWS APIs and the functions`,
      // One egress rule, to 0.0.0.0/0 on every protocol; nothing inbound.
      allowAllOutbound: true,
    });
    // The CDK words the rule "Allow all outbound traffic by default"; the Terraform module's words say why.
    (this.workerSecurityGroup.node.defaultChild as ec2.CfnSecurityGroup).addPropertyOverride(
      'SecurityGroupEgress.0.Description',
      'AWS APIs and HTTP functions',
    );
    const securityGroups: ec2.ISecurityGroup[] = [
      this.workerSecurityGroup,
      ...p.securityGroups,
      ...p.securityGroupIds.map((sg, i) => ec2.SecurityGroup.fromSecurityGroupId(this, `SecurityGroup${i}`, sg)),
    ];

    // Workers share the partitions through their leases, so a deployment starts the new tasks before
    // it stops the old ones (100/200 %).
    this.service = new ecs.FargateService(this, 'Worker', {
      serviceName: `${name}-worker`,
      cluster: this.cluster,
      taskDefinition: this.taskDefinition,
      desiredCount: p.desiredCount,
      platformVersion: ecs.FargatePlatformVersion.LATEST,
      minHealthyPercent: 100,
      maxHealthyPercent: 200,
      propagateTags: ecs.PropagatedTagSource.SERVICE,
      enableECSManagedTags: true,
      circuitBreaker: { enable: true, rollback: true },
      vpcSubnets: subnets,
      securityGroups,
      assignPublicIp: p.assignPublicIp,
    });
    // The functions and the role's permissions exist before the first worker starts.
    for (const f of Object.values(this.functions)) {
      this.service.node.addDependency(f.alias);
    }

    // --- alarms (alarms.tf) ----------------------------------------------------------------------

    const actions = p.alarmActions.map((a) => new ArnAlarmAction(a));
    const addAlarm = (id: string, alarmProps: cloudwatch.AlarmProps) => {
      const alarm = new cloudwatch.Alarm(this, id, alarmProps);
      alarm.addAlarmAction(...actions);
      alarm.addOkAction(...actions);
      this.alarms[alarmProps.alarmName!] = alarm;
      return alarm;
    };

    // A reader of an ingress stream or of the exchange falls behind.
    const iteratorAgeStreams = [...ingressNames, this.exchangeStreamName];
    for (const s of iteratorAgeStreams) {
      const alarm = addAlarm(`IteratorAge-${s}`, {
        alarmName: `${name}-${s}-iterator-age`,
        alarmDescription: `Readers of stream ${s} are more than ${p.iteratorAgeThresholdMs} ms behind (statefun deployment ${name})`,
        metric: new cloudwatch.Metric({
          namespace: 'AWS/Kinesis',
          metricName: 'GetRecords.IteratorAgeMilliseconds',
          dimensionsMap: { StreamName: s },
          statistic: 'Maximum',
          period: Duration.seconds(60),
        }),
        evaluationPeriods: 5,
        datapointsToAlarm: 3,
        threshold: p.iteratorAgeThresholdMs,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });
      const stream = this.streams[s];
      if (stream) alarm.node.addDependency(stream);
    }

    // A worker logged a failed checkpoint write or commit, a lost lease, a partition it could not
    // recover, or a task or committer that died of a bug.
    const commitFailuresNamespace = `StateFun/${name}`;
    new logs.MetricFilter(this, 'CommitFailuresFilter', {
      filterName: `${name}-commit-failures`,
      logGroup: this.workerLogGroup,
      filterPattern: logs.FilterPattern.literal(COMMIT_FAILURE_PHRASES.map((ph) => `?"${ph}"`).join(' ')),
      metricNamespace: commitFailuresNamespace,
      metricName: 'CommitFailures',
      metricValue: '1',
      defaultValue: 0,
    });
    addAlarm('CommitFailures', {
      alarmName: `${name}-commit-failures`,
      alarmDescription: `The statefun workers of ${name} logged failed checkpoint writes or commits, a lost lease or a partition that cannot recover`,
      metric: new cloudwatch.Metric({
        namespace: commitFailuresNamespace,
        metricName: 'CommitFailures',
        statistic: 'Sum',
        period: Duration.seconds(300),
      }),
      evaluationPeriods: 1,
      threshold: 0,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });

    // Records put on the dead-letter stream, or objects put under the dead-letter prefix.
    const deadLetterMetric = this.deadLetterStreamName
      ? new cloudwatch.Metric({
          namespace: 'AWS/Kinesis',
          metricName: 'IncomingRecords',
          dimensionsMap: { StreamName: this.deadLetterStreamName },
          statistic: 'Sum',
          period: Duration.seconds(300),
        })
      : new cloudwatch.Metric({
          namespace: 'AWS/S3',
          metricName: 'PutRequests',
          dimensionsMap: { BucketName: this.bucketName, FilterId: 'dead-letters' },
          statistic: 'Sum',
          period: Duration.seconds(300),
        });
    const deadLetterAlarm = addAlarm('DeadLetters', {
      alarmName: `${name}-dead-letters`,
      alarmDescription: `Dead letters arrived (statefun deployment ${name}); \`statefun dead-letters\` shows them and why`,
      metric: deadLetterMetric,
      evaluationPeriods: 1,
      threshold: 0,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    if (this.deadLetterPrefix !== undefined) deadLetterAlarm.node.addDependency(this.bucket);

    // Each worker reports its own stuck partitions once a minute (STATEFUN_METRICS_EMF_INTERVAL, 60 s
    // by default, matches the period): the alarm takes the worst worker's. The iterator age misses a
    // partition wedged in a restart loop or unable to publish: it reads nothing.
    addAlarm('StuckPartitions', {
      alarmName: `${name}-stuck-partitions`,
      alarmDescription:
        `A statefun worker of ${name} has had a partition stuck (failing to recover, commit or publish, or holding work ` +
        `without a commit for ${p.stuckPartitionSeconds} s) for ${p.stuckPartitionAlarmMinutes} minutes; its log says why`,
      metric: new cloudwatch.Metric({
        namespace: p.metricsNamespace,
        metricName: 'StuckPartitions',
        dimensionsMap: { Deployment: name },
        statistic: 'Maximum',
        period: Duration.seconds(60),
      }),
      evaluationPeriods: p.stuckPartitionAlarmMinutes,
      threshold: 0,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });

    // --- dashboard (dashboard.tf) ------------------------------------------------------------------

    if (p.dashboard) {
      this.dashboard = new cloudwatch.CfnDashboard(this, 'Dashboard', {
        dashboardName: name,
        dashboardBody: stack.toJsonString(
          dashboardBody({
            name,
            region,
            namespace: p.metricsNamespace,
            iteratorAgeStreams,
            alarmArnPrefix: `${arnPrefix}:cloudwatch:${region}:${account}:alarm:`,
            alarmNames: [
              `${name}-stuck-partitions`,
              ...iteratorAgeStreams.map((s) => `${name}-${s}-iterator-age`),
              `${name}-commit-failures`,
              `${name}-dead-letters`,
            ],
          }),
        ),
      });
    }
  }
}

// The dashboard of dashboard.tf, widget for widget: twelve wide, six high, two to a row.
function dashboardBody(d: {
  name: string;
  region: string;
  namespace: string;
  iteratorAgeStreams: string[];
  alarmArnPrefix: string;
  alarmNames: string[];
}): unknown {
  const m = (metric: string, options: Record<string, unknown>) => {
    if (!EMF_METRICS.includes(metric)) throw new Error(`not a metric of the workers: ${metric}`);
    return [d.namespace, metric, 'Deployment', d.name, options];
  };
  const graph = (title: string, props: Record<string, unknown>) => ({
    type: 'metric',
    properties: { region: d.region, view: 'timeSeries', stacked: false, period: 60, title, ...props },
  });
  const widgets = [
    graph('Invocations and dead letters (per minute)', {
      stat: 'Sum',
      metrics: [
        m('Invocations', { label: 'invocations' }),
        m('InvocationsDeadLettered', { label: 'invocations dead-lettered' }),
        m('DeadLetters', { label: 'dead letters (all causes)' }),
      ],
    }),
    graph('Invocation duration (ms, one attempt)', { stat: 'Average', metrics: [m('InvocationDurationAverage', { label: 'average' })] }),
    graph('Messages waiting for their function (backlog)', { stat: 'Sum', metrics: [m('BacklogMessages', { label: 'backlog' })] }),
    graph('Ingress lag (ms behind the newest record)', { stat: 'Maximum', metrics: [m('IngressLagMaxMilliseconds', { label: 'worst shard' })] }),
    graph('Commits and partition failures (per minute)', {
      stat: 'Sum',
      metrics: [m('Commits', { label: 'commits' }), m('PartitionFailures', { label: 'partition failures', yAxis: 'right' })],
    }),
    graph('Partitions held and stuck', {
      metrics: [
        m('PartitionsHeld', { label: 'held (all workers)', stat: 'Sum' }),
        m('StuckPartitions', { label: 'stuck (worst worker)', stat: 'Maximum', yAxis: 'right' }),
      ],
    }),
    graph('Records in and out (per minute)', {
      stat: 'Sum',
      metrics: [m('IngressRecords', { label: 'ingress records read' }), m('EgressRecords', { label: 'egress records written' })],
    }),
    graph('Iterator age of the streams the workers read (ms)', {
      stat: 'Maximum',
      metrics: d.iteratorAgeStreams.map((s) => ['AWS/Kinesis', 'GetRecords.IteratorAgeMilliseconds', 'StreamName', s, { label: s }]),
    }),
    { type: 'alarm', properties: { title: 'Alarms', alarms: d.alarmNames.map((a) => `${d.alarmArnPrefix}${a}`) } },
  ];
  return {
    widgets: widgets.map((w, i) => ({ ...w, x: (i % 2) * 12, y: Math.floor(i / 2) * 6, width: 12, height: 6 })),
  };
}

// Every prop with its default filled in: the Terraform module's defaults.
type Resolved = Required<Omit<StatefunDeploymentProps,
  'deadLetterExpirationDays' | 'deadLetterStreamName' | 'bucketName' | 'imageRepositoryArn' | 'vpc' | 'vpcSubnets' | 'vpcId' | 'subnetIds' | 'functions'>> &
  Pick<StatefunDeploymentProps, 'deadLetterExpirationDays' | 'deadLetterStreamName' | 'bucketName' | 'imageRepositoryArn' | 'vpc' | 'vpcSubnets' | 'vpcId' | 'subnetIds'> & {
    functions: Record<string, Required<StatefunFunction>>;
  };

/**
 * The defaults of the deployment's props: the Terraform module's variable defaults (the tests
 * compare the two). Props without an entry are required or have no default (a derived name).
 */
export const DEPLOYMENT_DEFAULTS = {
  tags: {},
  ingressStreams: {},
  ingressId: 'statefun/ingress',
  ingressStartupPosition: 'earliest',
  egressStreams: [],
  egressIds: [],
  extraModuleDocuments: '',
  streamMode: 'PROVISIONED',
  streamShards: 1,
  streamRetentionHours: 24,
  streamEncryption: true,
  deadLetterDestination: 'stream',
  createDeadLetterStream: true,
  pointInTimeRecovery: true,
  tableDeletionProtection: false,
  checkpointPrefix: 'statefun/',
  bucketVersioning: false,
  noncurrentVersionDays: 7,
  forceDestroy: false,
  functions: {},
  functionAlias: 'live',
  extraInvokeArns: [],
  desiredCount: 1,
  cpu: 512,
  memoryMb: 1024,
  cpuArchitecture: 'ARM64',
  securityGroupIds: [],
  assignPublicIp: false,
  commitInterval: '100ms',
  pollInterval: '250ms',
  workerEnvironment: {},
  logRetentionDays: 30,
  containerInsights: false,
  metricsNamespace: 'StatefunAws',
  stuckPartitionSeconds: 120,
  stuckPartitionAlarmMinutes: 3,
  alarmActions: [],
  iteratorAgeThresholdMs: 60000,
} as const;

/** The defaults of a function's settings: the optional(...) defaults of Terraform's `functions`. */
export const FUNCTION_DEFAULTS = {
  architecture: 'arm64',
  memoryMb: 256,
  timeoutSeconds: 30,
  environment: {},
  maxBatch: 1000,
  concurrencyLimit: -1,
  logRetentionDays: 14,
} as const;

function withDefaults(props: StatefunDeploymentProps): Resolved {
  const functions: Record<string, Required<StatefunFunction>> = {};
  for (const [k, f] of Object.entries(props.functions ?? {})) {
    functions[k] = {
      code: f.code,
      functionTypes: f.functionTypes,
      architecture: f.architecture ?? FUNCTION_DEFAULTS.architecture,
      // Terraform fixes these two: a Rust function built by cargo lambda.
      handler: f.handler ?? 'bootstrap',
      runtime: f.runtime ?? lambda.Runtime.PROVIDED_AL2023,
      memoryMb: f.memoryMb ?? FUNCTION_DEFAULTS.memoryMb,
      timeoutSeconds: f.timeoutSeconds ?? FUNCTION_DEFAULTS.timeoutSeconds,
      environment: f.environment ?? { ...FUNCTION_DEFAULTS.environment },
      maxBatch: f.maxBatch ?? FUNCTION_DEFAULTS.maxBatch,
      concurrencyLimit: f.concurrencyLimit ?? FUNCTION_DEFAULTS.concurrencyLimit,
      logRetentionDays: f.logRetentionDays ?? FUNCTION_DEFAULTS.logRetentionDays,
    };
  }
  const d = DEPLOYMENT_DEFAULTS;
  return {
    ...props,
    tags: props.tags ?? {},
    ingressStreams: props.ingressStreams ?? {},
    ingressId: props.ingressId ?? d.ingressId,
    ingressStartupPosition: props.ingressStartupPosition ?? d.ingressStartupPosition,
    egressStreams: props.egressStreams ?? [],
    egressIds: props.egressIds ?? [],
    extraModuleDocuments: props.extraModuleDocuments ?? d.extraModuleDocuments,
    streamMode: props.streamMode ?? d.streamMode,
    streamShards: props.streamShards ?? d.streamShards,
    streamRetentionHours: props.streamRetentionHours ?? d.streamRetentionHours,
    streamEncryption: props.streamEncryption ?? d.streamEncryption,
    deadLetterDestination: props.deadLetterDestination ?? d.deadLetterDestination,
    createDeadLetterStream: props.createDeadLetterStream ?? d.createDeadLetterStream,
    pointInTimeRecovery: props.pointInTimeRecovery ?? d.pointInTimeRecovery,
    tableDeletionProtection: props.tableDeletionProtection ?? d.tableDeletionProtection,
    checkpointPrefix: props.checkpointPrefix ?? d.checkpointPrefix,
    bucketVersioning: props.bucketVersioning ?? d.bucketVersioning,
    noncurrentVersionDays: props.noncurrentVersionDays ?? d.noncurrentVersionDays,
    forceDestroy: props.forceDestroy ?? d.forceDestroy,
    functions,
    functionAlias: props.functionAlias ?? d.functionAlias,
    extraInvokeArns: props.extraInvokeArns ?? [],
    desiredCount: props.desiredCount ?? d.desiredCount,
    cpu: props.cpu ?? d.cpu,
    memoryMb: props.memoryMb ?? d.memoryMb,
    cpuArchitecture: props.cpuArchitecture ?? d.cpuArchitecture,
    securityGroups: props.securityGroups ?? [],
    securityGroupIds: props.securityGroupIds ?? [],
    assignPublicIp: props.assignPublicIp ?? d.assignPublicIp,
    commitInterval: props.commitInterval ?? d.commitInterval,
    pollInterval: props.pollInterval ?? d.pollInterval,
    workerEnvironment: props.workerEnvironment ?? {},
    logRetentionDays: props.logRetentionDays ?? d.logRetentionDays,
    containerInsights: props.containerInsights ?? d.containerInsights,
    metricsNamespace: props.metricsNamespace ?? d.metricsNamespace,
    stuckPartitionSeconds: props.stuckPartitionSeconds ?? d.stuckPartitionSeconds,
    stuckPartitionAlarmMinutes: props.stuckPartitionAlarmMinutes ?? d.stuckPartitionAlarmMinutes,
    alarmActions: props.alarmActions ?? [],
    iteratorAgeThresholdMs: props.iteratorAgeThresholdMs ?? d.iteratorAgeThresholdMs,
    dashboard: props.dashboard ?? true,
  };
}

// The Terraform module's variable validations, checked on values known at synth time.
function validate(p: Resolved): void {
  const fail = (msg: string) => {
    throw new Error(`StatefunDeployment: ${msg}`);
  };
  const known = (v: unknown) => !Token.isUnresolved(v);
  const whole = (n: number) => Number.isInteger(n);

  if (!NAME_RE.test(p.name)) {
    fail('name must be 3 to 32 characters: lower-case letters, digits and hyphens, starting with a letter and not ending with a hyphen.');
  }
  if (!(whole(p.partitions) && p.partitions >= 1 && p.partitions <= 4096)) fail('partitions must be a whole number between 1 and 4096.');
  for (const [s, v] of Object.entries(p.ingressStreams)) {
    if (!STREAM_NAME_RE.test(s)) fail(`ingress stream ${s}: Kinesis stream names are 1 to 128 characters of letters, digits, '_', '.' and '-'.`);
    if (v.targets.length === 0 || !v.targets.every((t) => FUNCTION_TYPE_RE.test(t))) {
      fail(`ingress stream ${s} needs at least one target, each a function type "namespace/name".`);
    }
  }
  for (const s of p.egressStreams) {
    if (!STREAM_NAME_RE.test(s)) fail(`egress stream ${s}: Kinesis stream names are 1 to 128 characters of letters, digits, '_', '.' and '-'.`);
  }
  if (p.deadLetterStreamName !== undefined && !STREAM_NAME_RE.test(p.deadLetterStreamName)) fail('deadLetterStreamName is not a Kinesis stream name.');
  if (!['earliest', 'latest'].includes(p.ingressStartupPosition)) fail('ingressStartupPosition must be earliest or latest.');
  if (!['PROVISIONED', 'ON_DEMAND'].includes(p.streamMode)) fail('streamMode must be PROVISIONED or ON_DEMAND.');
  if (!(whole(p.streamShards) && p.streamShards >= 1 && p.streamShards <= 10000)) fail('streamShards must be a whole number between 1 and 10000.');
  if (!(p.streamRetentionHours >= 24 && p.streamRetentionHours <= 8760)) fail('streamRetentionHours must be between 24 and 8760.');
  if (!['stream', 'objects'].includes(p.deadLetterDestination)) fail('deadLetterDestination must be stream or objects.');
  if (p.deadLetterExpirationDays !== undefined && !(p.deadLetterExpirationDays >= 1)) fail('deadLetterExpirationDays must be at least 1.');
  if (p.bucketName !== undefined && known(p.bucketName) && !/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(p.bucketName)) {
    fail('bucketName must be a valid S3 bucket name (3 to 63 lower-case letters, digits, \'.\' and \'-\').');
  }
  const prefix = p.checkpointPrefix;
  if (!(prefix === '' || (prefix.endsWith('/') && !prefix.startsWith('/') && !prefix.includes('*')))) {
    fail("checkpointPrefix must be empty or end with '/', must not start with '/' and must not contain '*'.");
  }
  if (!(p.noncurrentVersionDays >= 1)) fail('noncurrentVersionDays must be at least 1.');
  for (const [k, f] of Object.entries(p.functions)) {
    if (!FUNCTION_KEY_RE.test(k) || f.functionTypes.length === 0 || !['arm64', 'x86_64'].includes(f.architecture)) {
      fail("Function keys are 1 to 24 letters, digits, '-' or '_'; every function needs functionTypes; architecture is arm64 or x86_64.");
    }
    if (!(f.timeoutSeconds >= 1 && f.timeoutSeconds <= 900 && f.memoryMb >= 128 && f.memoryMb <= 10240)) {
      fail('timeoutSeconds must be between 1 and 900 and memoryMb between 128 and 10240.');
    }
    retentionDays(f.logRetentionDays);
  }
  for (const a of p.extraInvokeArns) {
    if (known(a) && !QUALIFIED_LAMBDA_ARN_RE.test(a)) {
      fail('extraInvokeArns must be qualified Lambda function ARNs (arn:...:function:<name>:<version or alias>) without wildcards.');
    }
  }
  if (!['ARM64', 'X86_64'].includes(p.cpuArchitecture)) fail('cpuArchitecture must be ARM64 or X86_64.');
  if (!(whole(p.desiredCount) && p.desiredCount >= 0)) fail('desiredCount must be a whole number, 0 or more.');
  if (p.desiredCount > p.partitions) fail('desiredCount must not exceed partitions: a worker without a partition has nothing to do.');
  if ((p.vpc === undefined) === (p.vpcId === undefined)) fail('give either vpc (with vpcSubnets) or vpcId (with subnetIds).');
  if (p.vpcId !== undefined && (p.subnetIds === undefined || p.subnetIds.length === 0)) fail('subnetIds must name at least one subnet.');
  if (p.vpc !== undefined && p.subnetIds !== undefined) fail('subnetIds goes with vpcId; with vpc, use vpcSubnets.');
  if (!(whole(p.stuckPartitionSeconds) && p.stuckPartitionSeconds >= 30)) fail('stuckPartitionSeconds must be a whole number, 30 or more.');
  if (!(whole(p.stuckPartitionAlarmMinutes) && p.stuckPartitionAlarmMinutes >= 1)) fail('stuckPartitionAlarmMinutes must be a whole number, 1 or more.');
  retentionDays(p.logRetentionDays);
}

// CloudWatch Logs takes only some retentions; 0 means never expire, as in Terraform.
function retentionDays(days: number): logs.RetentionDays {
  if (days === 0) return logs.RetentionDays.INFINITE;
  const allowed = Object.values(logs.RetentionDays).filter((v): v is number => typeof v === 'number');
  if (!allowed.includes(days)) {
    throw new Error(`StatefunDeployment: log retention ${days} days is not one CloudWatch Logs takes (${allowed.filter((d) => d !== logs.RetentionDays.INFINITE).join(', ')}, or 0 for never).`);
  }
  return days as logs.RetentionDays;
}
