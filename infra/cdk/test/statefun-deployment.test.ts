// StatefunDeployment over its synthesized template: the resources and their counts, the names and
// shapes the runtime expects, the worker's environment and module.yaml, IAM scoped to exactly this
// deployment's resources, and the alarms, each as the Terraform module makes them.

import { strict as assert } from 'node:assert';
import { describe, test } from 'node:test';
import { Stack, aws_ecr as ecr, aws_ecs as ecs } from 'aws-cdk-lib';
import { Match } from 'aws-cdk-lib/assertions';
import { parseAllDocuments } from 'yaml';
import { COMMIT_FAILURE_PHRASES, StatefunDeployment } from '../lib';
import {
  ACCOUNT,
  PARTITION,
  REGION,
  allStatements,
  asList,
  fakeArtifact,
  resolve,
  resourceWhere,
  resourcesOf,
  shoppingCartProps,
  synth,
  testApp,
  workerEnvironment,
} from './helpers';
import { TERRAFORM_SHOPPING_CART_MODULE_YAML } from './terraform-fixtures';

const NAME = 'shopping-cart';
const arn = (service: string, resource: string) => `arn:${PARTITION}:${service}:${REGION}:${ACCOUNT}:${resource}`;
const streamArn = (s: string) => arn('kinesis', `stream/${s}`);
const ALIAS_ARN = arn('lambda', `function:${NAME}-functions:live`);
const BUCKET = `${NAME}-checkpoints-${ACCOUNT}`;
const DATA_PLANE = /^(kinesis|dynamodb|s3|lambda):/;

/** The statements of a role's inline policies, resolved, by Sid; fails if anything else is attached to it. */
function roleStatements(json: any, roleName: string, policyName: string): Record<string, any> {
  const { id, resource } = resourceWhere(json, 'AWS::IAM::Role', 'RoleName', roleName);
  assert.equal(resource.Properties.ManagedPolicyArns, undefined, `${roleName} has no managed policies`);
  const policies = resource.Properties.Policies;
  assert.deepEqual(policies.map((p: any) => p.PolicyName), [policyName]);
  const attached = Object.values(resourcesOf(json, 'AWS::IAM::Policy')).filter((p: any) =>
    asList(p.Properties.Roles).some((r: any) => r.Ref === id),
  );
  assert.deepEqual(attached, [], `no other policy is attached to ${roleName}`);
  const out: Record<string, any> = {};
  for (const s of asList(policies[0].PolicyDocument.Statement)) {
    const r = resolve(s);
    out[r.Sid] = { ...r, Action: asList(r.Action), Resource: asList(r.Resource) };
  }
  return out;
}

describe('the shopping cart deployment (environment-agnostic stack)', () => {
  const { template, json, deployment } = synth(shoppingCartProps());
  const env = workerEnvironment(json);

  test('streams: ingress, egress, exchange with one shard per partition, dead letters', () => {
    const streams = Object.values(resourcesOf(json, 'AWS::Kinesis::Stream')).map((r) => r.Properties);
    assert.deepEqual(
      streams.map((s) => s.Name).sort(),
      ['add-to-cart', 'cart-results', 'inventory-updates', 'restock', `${NAME}-dead-letters`, `${NAME}-exchange`],
    );
    const byName = Object.fromEntries(streams.map((s) => [s.Name, s]));
    assert.equal(byName[`${NAME}-exchange`].ShardCount, 4);
    assert.deepEqual(byName[`${NAME}-exchange`].StreamModeDetails, { StreamMode: 'PROVISIONED' });
    for (const s of ['add-to-cart', 'restock', 'cart-results', 'inventory-updates', `${NAME}-dead-letters`]) {
      assert.equal(byName[s].ShardCount, 1, s);
    }
    for (const s of streams) {
      assert.equal(s.RetentionPeriodHours, 24);
      assert.deepEqual(s.StreamEncryption, { EncryptionType: 'KMS', KeyId: 'alias/aws/kinesis' });
    }
    const role = (n: string) => byName[n].Tags.find((t: any) => t.Key === 'statefun:role').Value;
    assert.deepEqual(
      ['add-to-cart', 'cart-results', `${NAME}-dead-letters`, `${NAME}-exchange`].map(role),
      ['ingress', 'egress', 'dead-letters', 'exchange'],
    );
  });

  test('the lease and commit table: hash key partition (N), on demand, point-in-time recovery', () => {
    template.resourceCountIs('AWS::DynamoDB::Table', 1);
    template.hasResourceProperties('AWS::DynamoDB::Table', {
      TableName: `${NAME}-partitions`,
      KeySchema: [{ AttributeName: 'partition', KeyType: 'HASH' }],
      AttributeDefinitions: [{ AttributeName: 'partition', AttributeType: 'N' }],
      BillingMode: 'PAY_PER_REQUEST',
      PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
      DeletionProtectionEnabled: false,
    });
  });

  test('the checkpoint bucket: SSE-S3, no public access, owner-enforced, lifecycle rules, TLS only, retained', () => {
    template.resourceCountIs('AWS::S3::Bucket', 1);
    const [bucket] = Object.values(resourcesOf(json, 'AWS::S3::Bucket'));
    const p = resolve(bucket.Properties);
    assert.equal(p.BucketName, BUCKET);
    assert.deepEqual(p.BucketEncryption, { ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }] });
    assert.deepEqual(p.PublicAccessBlockConfiguration, {
      BlockPublicAcls: true,
      BlockPublicPolicy: true,
      IgnorePublicAcls: true,
      RestrictPublicBuckets: true,
    });
    assert.deepEqual(p.OwnershipControls, { Rules: [{ ObjectOwnership: 'BucketOwnerEnforced' }] });
    assert.equal(p.VersioningConfiguration, undefined);
    assert.deepEqual(p.LifecycleConfiguration.Rules, [
      { Id: 'abort-incomplete-multipart-uploads', Status: 'Enabled', AbortIncompleteMultipartUpload: { DaysAfterInitiation: 1 } },
      {
        Id: 'expire-replaced-checkpoint-versions',
        Status: 'Enabled',
        Prefix: 'statefun/',
        NoncurrentVersionExpiration: { NoncurrentDays: 7 },
        ExpiredObjectDeleteMarker: true,
      },
    ]);
    assert.equal(bucket.DeletionPolicy, 'Retain');
    template.hasResourceProperties('AWS::S3::BucketPolicy', {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({ Effect: 'Deny', Action: 's3:*', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
        ]),
      },
    });
  });

  test('one Lambda function per entry, provided.al2023, with its log group, a published version and the alias', () => {
    template.resourceCountIs('AWS::Lambda::Function', 1);
    template.resourceCountIs('AWS::Lambda::Version', 1);
    template.resourceCountIs('AWS::Lambda::Alias', 1);
    const { id, resource } = resourceWhere(json, 'AWS::Lambda::Function', 'FunctionName', `${NAME}-functions`);
    const p = resource.Properties;
    assert.equal(p.Handler, 'bootstrap');
    assert.equal(p.Runtime, 'provided.al2023');
    assert.deepEqual(p.Architectures, ['arm64']);
    assert.equal(p.MemorySize, 256);
    assert.equal(p.Timeout, 30);
    assert.equal(p.ReservedConcurrentExecutions, undefined);
    assert.equal(p.LoggingConfig.LogFormat, 'Text');
    assert.deepEqual(resolve(p.Role), `<GetAtt ${resourceWhere(json, 'AWS::IAM::Role', 'RoleName', `${NAME}-functions-fn`).id}.Arn>`);
    const logGroup = resourceWhere(json, 'AWS::Logs::LogGroup', 'LogGroupName', `/aws/lambda/${NAME}-functions`);
    assert.equal(logGroup.resource.Properties.RetentionInDays, 14);
    assert.deepEqual(p.LoggingConfig.LogGroup, { Ref: logGroup.id });
    const [alias] = Object.values(resourcesOf(json, 'AWS::Lambda::Alias'));
    assert.equal(alias.Properties.Name, 'live');
    assert.deepEqual(alias.Properties.FunctionName, { Ref: id });
    const [versionId] = Object.keys(resourcesOf(json, 'AWS::Lambda::Version'));
    assert.deepEqual(alias.Properties.FunctionVersion, { 'Fn::GetAtt': [versionId, 'Version'] });
  });

  test('the ECS cluster, task definition and service', () => {
    template.resourceCountIs('AWS::ECS::Cluster', 1);
    template.resourceCountIs('AWS::ECS::TaskDefinition', 1);
    template.resourceCountIs('AWS::ECS::Service', 1);
    template.hasResourceProperties('AWS::ECS::Cluster', {
      ClusterName: NAME,
      ClusterSettings: [{ Name: 'containerInsights', Value: 'disabled' }],
    });
    template.hasResourceProperties('AWS::ECS::TaskDefinition', {
      Family: `${NAME}-worker`,
      RequiresCompatibilities: ['FARGATE'],
      NetworkMode: 'awsvpc',
      Cpu: '512',
      Memory: '1024',
      RuntimePlatform: { OperatingSystemFamily: 'LINUX', CpuArchitecture: 'ARM64' },
      ContainerDefinitions: [
        Match.objectLike({
          Name: 'worker',
          Image: '123456789012.dkr.ecr.eu-west-1.amazonaws.com/shopping-cart-runtime:v1',
          Essential: true,
          Command: ['run'],
          StopTimeout: 60,
          LogConfiguration: {
            LogDriver: 'awslogs',
            Options: { 'awslogs-group': Match.anyValue(), 'awslogs-region': Match.anyValue(), 'awslogs-stream-prefix': 'worker' },
          },
        }),
      ],
    });
    const [td] = Object.values(resourcesOf(json, 'AWS::ECS::TaskDefinition'));
    const taskRole = resourceWhere(json, 'AWS::IAM::Role', 'RoleName', `${NAME}-worker-task`).id;
    const executionRole = resourceWhere(json, 'AWS::IAM::Role', 'RoleName', `${NAME}-worker-execution`).id;
    assert.equal(resolve(td.Properties.TaskRoleArn), `<GetAtt ${taskRole}.Arn>`);
    assert.equal(resolve(td.Properties.ExecutionRoleArn), `<GetAtt ${executionRole}.Arn>`);
    const logGroup = resourceWhere(json, 'AWS::Logs::LogGroup', 'LogGroupName', `/ecs/${NAME}-worker`);
    assert.equal(logGroup.resource.Properties.RetentionInDays, 30);
    assert.deepEqual(td.Properties.ContainerDefinitions[0].LogConfiguration.Options['awslogs-group'], { Ref: logGroup.id });

    const [service] = Object.values(resourcesOf(json, 'AWS::ECS::Service'));
    const s = resolve(service.Properties);
    assert.equal(s.ServiceName, `${NAME}-worker`);
    assert.equal(s.DesiredCount, 1);
    assert.equal(s.LaunchType, 'FARGATE');
    assert.equal(s.PlatformVersion, 'LATEST');
    assert.equal(s.PropagateTags, 'SERVICE');
    assert.equal(s.EnableECSManagedTags, true);
    assert.equal(s.DeploymentConfiguration.MinimumHealthyPercent, 100);
    assert.equal(s.DeploymentConfiguration.MaximumPercent, 200);
    assert.deepEqual(s.DeploymentConfiguration.DeploymentCircuitBreaker, { Enable: true, Rollback: true });
    const sg = Object.keys(resourcesOf(json, 'AWS::EC2::SecurityGroup'));
    assert.deepEqual(s.NetworkConfiguration.AwsvpcConfiguration, {
      AssignPublicIp: 'DISABLED',
      Subnets: ['subnet-00000000000000001', 'subnet-00000000000000002'],
      SecurityGroups: sg.map((id) => `<GetAtt ${id}.GroupId>`),
    });
    // The functions (their aliases) and the task role exist before the first worker starts.
    const [aliasId] = Object.keys(resourcesOf(json, 'AWS::Lambda::Alias'));
    assert.ok(service.DependsOn.includes(aliasId));
    assert.ok(service.DependsOn.includes(taskRole));
  });

  test('the worker security group admits nothing inbound and everything outbound', () => {
    template.resourceCountIs('AWS::EC2::SecurityGroup', 1);
    template.hasResourceProperties('AWS::EC2::SecurityGroup', {
      GroupName: `${NAME}-worker`,
      VpcId: 'vpc-0123456789abcdef0',
      SecurityGroupEgress: [{ CidrIp: '0.0.0.0/0', IpProtocol: '-1', Description: 'AWS APIs and HTTP functions' }],
      SecurityGroupIngress: Match.absent(),
    });
    template.resourceCountIs('AWS::EC2::SecurityGroupIngress', 0);
  });

  test("the worker's environment is the Terraform module's", () => {
    const { STATEFUN_MODULE_YAML, ...rest } = env;
    assert.deepEqual(rest, {
      STATEFUN_BACKEND: 'aws',
      STATEFUN_TABLE: `${NAME}-partitions`,
      STATEFUN_BUCKET: BUCKET,
      STATEFUN_PREFIX: 'statefun/',
      STATEFUN_EXCHANGE_STREAM: `${NAME}-exchange`,
      STATEFUN_PARTITIONS: '4',
      STATEFUN_DEAD_LETTER_DESTINATION: 'stream',
      STATEFUN_DEAD_LETTER_STREAM: `${NAME}-dead-letters`,
      STATEFUN_REGION: REGION,
      STATEFUN_COMMIT_INTERVAL: '100ms',
      STATEFUN_POLL_INTERVAL: '250ms',
      STATEFUN_LOG: 'info',
      NO_COLOR: '1',
      STATEFUN_METRICS_EMF: 'true',
      STATEFUN_METRICS_EMF_NAMESPACE: 'StatefunAws',
      STATEFUN_METRICS_EMF_DEPLOYMENT: NAME,
      STATEFUN_STUCK_AFTER: '120s',
    });
    assert.equal(typeof STATEFUN_MODULE_YAML, 'string');
  });

  test('STATEFUN_MODULE_YAML parses to the endpoint, ingress and egress documents, as Terraform writes it', () => {
    const text = env.STATEFUN_MODULE_YAML;
    assert.equal(text, TERRAFORM_SHOPPING_CART_MODULE_YAML(ALIAS_ARN));
    const docs = parseAllDocuments(text).map((d) => {
      assert.deepEqual(d.errors, []);
      return d.toJS();
    });
    assert.deepEqual(docs, [
      {
        kind: 'statefun-aws.endpoints.v1/lambda',
        spec: {
          functions: 'shoppingcart/*',
          functionName: ALIAS_ARN,
          maxNumBatchRequests: 1000,
          transport: { call: '35s', payload_max_bytes: 6291456 },
        },
      },
      {
        kind: 'io.statefun.kinesis.v1/ingress',
        spec: {
          id: 'shoppingcart/ingress',
          awsRegion: { type: 'default' },
          startupPosition: { type: 'earliest' },
          streams: [
            { stream: 'add-to-cart', valueType: 'type.googleapis.com/shoppingcart.AddToCart', targets: ['shoppingcart/cart'] },
            { stream: 'restock', valueType: 'type.googleapis.com/shoppingcart.RestockItem', targets: ['shoppingcart/inventory'] },
          ],
        },
      },
      { kind: 'io.statefun.kinesis.v1/egress', spec: { id: 'shoppingcart/kinesis', awsRegion: { type: 'default' } } },
    ]);
    // The endpoint invokes the alias the template creates.
    assert.equal(deployment.functions.functions.alias.aliasName, 'live');
  });

  test('no statement allows a kinesis, dynamodb, s3 or lambda action on "*" or with a wildcard action', () => {
    const statements = allStatements(json).filter(({ statement }) => statement.Effect === 'Allow');
    assert.ok(statements.length > 0);
    for (const { where, statement } of statements) {
      const actions = asList<string>(statement.Action);
      const dataPlane = actions.filter((a) => DATA_PLANE.test(a));
      if (dataPlane.length === 0) continue;
      for (const a of dataPlane) assert.ok(!a.includes('*'), `${where}: ${a} is a wildcard action`);
      for (const r of asList(resolve(statement.Resource))) {
        assert.notEqual(r, '*', `${where}: ${dataPlane.join(', ')} on "*"`);
      }
    }
  });

  test("the worker task role names exactly this deployment's streams, table, checkpoint prefix and alias", () => {
    const statements = roleStatements(json, `${NAME}-worker-task`, 'statefun-worker');
    assert.deepEqual(Object.keys(statements), [
      'ReadInputStreams',
      'WriteOutputStreams',
      'LeasesAndCommits',
      'CheckpointObjects',
      'ListCheckpoints',
      'InvokeFunctions',
    ]);
    const s = statements;
    assert.deepEqual(s.ReadInputStreams.Action, ['kinesis:DescribeStreamSummary', 'kinesis:ListShards', 'kinesis:GetShardIterator', 'kinesis:GetRecords']);
    assert.deepEqual(s.ReadInputStreams.Resource, ['add-to-cart', 'restock', `${NAME}-exchange`].map(streamArn));
    assert.deepEqual(s.WriteOutputStreams.Action, ['kinesis:DescribeStreamSummary', 'kinesis:ListShards', 'kinesis:PutRecord', 'kinesis:PutRecords']);
    assert.deepEqual(
      s.WriteOutputStreams.Resource,
      [`${NAME}-exchange`, 'cart-results', 'inventory-updates', `${NAME}-dead-letters`].map(streamArn),
    );
    assert.deepEqual(s.LeasesAndCommits.Action, ['dynamodb:DescribeTable', 'dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem']);
    assert.deepEqual(s.LeasesAndCommits.Resource, [arn('dynamodb', `table/${NAME}-partitions`)]);
    assert.deepEqual(s.CheckpointObjects.Action, ['s3:GetObject', 's3:PutObject', 's3:DeleteObject', 's3:AbortMultipartUpload', 's3:ListMultipartUploadParts']);
    assert.deepEqual(s.CheckpointObjects.Resource, [`arn:${PARTITION}:s3:::${BUCKET}/statefun/*`]);
    assert.deepEqual(s.ListCheckpoints.Action, ['s3:ListBucket']);
    assert.deepEqual(s.ListCheckpoints.Resource, [`arn:${PARTITION}:s3:::${BUCKET}`]);
    assert.deepEqual(s.ListCheckpoints.Condition, { StringLike: { 's3:prefix': 'statefun/*' } });
    assert.deepEqual(s.InvokeFunctions.Action, ['lambda:InvokeFunction']);
    assert.deepEqual(s.InvokeFunctions.Resource, [ALIAS_ARN]);
    for (const st of Object.values(s)) assert.equal(st.Effect, 'Allow');
  });

  test('the names in the ARNs are the names of the resources the template creates', () => {
    const streams = new Set(Object.values(resourcesOf(json, 'AWS::Kinesis::Stream')).map((r) => streamArn(r.Properties.Name)));
    const s = roleStatements(json, `${NAME}-worker-task`, 'statefun-worker');
    for (const a of [...s.ReadInputStreams.Resource, ...s.WriteOutputStreams.Resource]) assert.ok(streams.has(a), a);
    const [table] = Object.values(resourcesOf(json, 'AWS::DynamoDB::Table'));
    assert.deepEqual(s.LeasesAndCommits.Resource, [arn('dynamodb', `table/${table.Properties.TableName}`)]);
    const [bucket] = Object.values(resourcesOf(json, 'AWS::S3::Bucket'));
    assert.deepEqual(s.ListCheckpoints.Resource, [`arn:${PARTITION}:s3:::${resolve(bucket.Properties.BucketName)}`]);
    const [fn] = Object.values(resourcesOf(json, 'AWS::Lambda::Function'));
    const [alias] = Object.values(resourcesOf(json, 'AWS::Lambda::Alias'));
    assert.deepEqual(s.InvokeFunctions.Resource, [arn('lambda', `function:${fn.Properties.FunctionName}:${alias.Properties.Name}`)]);
  });

  test("the execution role may write the worker's log group and pull from the image's repository only", () => {
    const s = roleStatements(json, `${NAME}-worker-execution`, 'pull-and-log');
    assert.deepEqual(Object.keys(s), ['WorkerLogs', 'PullImage', 'RegistryLogin']);
    assert.deepEqual(s.WorkerLogs.Action, ['logs:CreateLogStream', 'logs:PutLogEvents']);
    assert.deepEqual(s.WorkerLogs.Resource, [arn('logs', `log-group:/ecs/${NAME}-worker:log-stream:*`)]);
    assert.deepEqual(s.PullImage.Action, ['ecr:BatchCheckLayerAvailability', 'ecr:GetDownloadUrlForLayer', 'ecr:BatchGetImage']);
    assert.deepEqual(s.PullImage.Resource, ['arn:aws:ecr:eu-west-1:123456789012:repository/shopping-cart-runtime']);
    assert.deepEqual(s.RegistryLogin.Action, ['ecr:GetAuthorizationToken']);
    assert.deepEqual(s.RegistryLogin.Resource, ['*']);
  });

  test("each function's role may write its own log group only; the roles trust their service in this account", () => {
    const s = roleStatements(json, `${NAME}-functions-fn`, 'logs');
    assert.deepEqual(Object.keys(s), ['OwnLogs']);
    assert.deepEqual(s.OwnLogs.Resource, [arn('logs', `log-group:/aws/lambda/${NAME}-functions:log-stream:*`)]);
    for (const [role, service] of [
      [`${NAME}-functions-fn`, 'lambda.amazonaws.com'],
      [`${NAME}-worker-task`, 'ecs-tasks.amazonaws.com'],
      [`${NAME}-worker-execution`, 'ecs-tasks.amazonaws.com'],
    ]) {
      const trust = resolve(resourceWhere(json, 'AWS::IAM::Role', 'RoleName', role).resource.Properties.AssumeRolePolicyDocument);
      assert.deepEqual(trust.Statement, [
        { Action: 'sts:AssumeRole', Effect: 'Allow', Principal: { Service: service }, Condition: { StringEquals: { 'aws:SourceAccount': ACCOUNT } } },
      ]);
    }
  });

  test('alarms: iterator age per ingress stream and the exchange, commit failures, dead letters, stuck partitions', () => {
    const alarms: Record<string, any> = Object.fromEntries(
      Object.values(resourcesOf(json, 'AWS::CloudWatch::Alarm')).map((r) => [r.Properties.AlarmName, resolve(r.Properties)]),
    );
    assert.deepEqual(Object.keys(alarms).sort(), [
      `${NAME}-add-to-cart-iterator-age`,
      `${NAME}-commit-failures`,
      `${NAME}-dead-letters`,
      `${NAME}-restock-iterator-age`,
      `${NAME}-shopping-cart-exchange-iterator-age`,
      `${NAME}-stuck-partitions`,
    ]);
    for (const s of ['add-to-cart', 'restock', `${NAME}-exchange`]) {
      const a = alarms[`${NAME}-${s}-iterator-age`];
      assert.equal(a.Namespace, 'AWS/Kinesis');
      assert.equal(a.MetricName, 'GetRecords.IteratorAgeMilliseconds');
      assert.deepEqual(a.Dimensions, [{ Name: 'StreamName', Value: s }]);
      assert.equal(a.Statistic, 'Maximum');
      assert.equal(a.Period, 60);
      assert.equal(a.EvaluationPeriods, 5);
      assert.equal(a.DatapointsToAlarm, 3);
      assert.equal(a.Threshold, 60000);
      assert.equal(a.TreatMissingData, 'notBreaching');
    }

    // The stuck-partitions alarm reads the metric the workers publish, where their EMF settings put it.
    const stuck = alarms[`${NAME}-stuck-partitions`];
    assert.equal(stuck.Namespace, env.STATEFUN_METRICS_EMF_NAMESPACE);
    assert.equal(stuck.MetricName, 'StuckPartitions');
    assert.deepEqual(stuck.Dimensions, [{ Name: 'Deployment', Value: env.STATEFUN_METRICS_EMF_DEPLOYMENT }]);
    assert.equal(env.STATEFUN_METRICS_EMF, 'true');
    assert.equal(stuck.Statistic, 'Maximum');
    assert.equal(stuck.Period, 60);
    assert.equal(stuck.EvaluationPeriods, 3);
    assert.equal(stuck.Threshold, 0);
    assert.equal(stuck.ComparisonOperator, 'GreaterThanThreshold');
    assert.equal(stuck.TreatMissingData, 'notBreaching');

    const dead = alarms[`${NAME}-dead-letters`];
    assert.equal(dead.Namespace, 'AWS/Kinesis');
    assert.equal(dead.MetricName, 'IncomingRecords');
    assert.deepEqual(dead.Dimensions, [{ Name: 'StreamName', Value: env.STATEFUN_DEAD_LETTER_STREAM }]);

    // The commit-failures alarm counts what its metric filter on the worker's log group matches.
    const [filter] = Object.values(resourcesOf(json, 'AWS::Logs::MetricFilter'));
    const f = filter.Properties;
    assert.equal(f.FilterName, `${NAME}-commit-failures`);
    assert.equal(f.FilterPattern, COMMIT_FAILURE_PHRASES.map((p) => `?"${p}"`).join(' '));
    assert.deepEqual(COMMIT_FAILURE_PHRASES, [
      'commit failed',
      'commit of epoch',
      'writing checkpoint',
      'lost its lease',
      'cannot recover',
      'task panicked',
      'ended unexpectedly',
    ]);
    assert.deepEqual(f.LogGroupName, { Ref: resourceWhere(json, 'AWS::Logs::LogGroup', 'LogGroupName', `/ecs/${NAME}-worker`).id });
    assert.deepEqual(f.MetricTransformations, [{ MetricName: 'CommitFailures', MetricNamespace: `StateFun/${NAME}`, MetricValue: '1', DefaultValue: 0 }]);
    const commit = alarms[`${NAME}-commit-failures`];
    assert.equal(commit.Namespace, `StateFun/${NAME}`);
    assert.equal(commit.MetricName, 'CommitFailures');
    assert.equal(commit.Statistic, 'Sum');
    assert.equal(commit.Period, 300);

    for (const a of Object.values(alarms)) {
      assert.equal(a.AlarmActions, undefined);
      assert.equal(a.OKActions, undefined);
    }
  });

  test('the dashboard graphs the workers\' metrics and shows every alarm', () => {
    const [dashboard] = Object.values(resourcesOf(json, 'AWS::CloudWatch::Dashboard'));
    assert.equal(dashboard.Properties.DashboardName, NAME);
    const body = JSON.parse(resolve(dashboard.Properties.DashboardBody));
    assert.equal(body.widgets.length, 9);
    const emf = body.widgets
      .flatMap((w: any) => w.properties.metrics ?? [])
      .filter((m: any) => m[0] === 'StatefunAws');
    assert.ok(emf.every((m: any) => m[2] === 'Deployment' && m[3] === NAME));
    assert.ok(emf.some((m: any) => m[1] === 'StuckPartitions'));
    const alarmWidget = body.widgets.find((w: any) => w.type === 'alarm');
    const alarmNames = Object.values(resourcesOf(json, 'AWS::CloudWatch::Alarm')).map((r) => r.Properties.AlarmName);
    assert.deepEqual(
      [...alarmWidget.properties.alarms].sort(),
      alarmNames.map((n) => arn('cloudwatch', `alarm:${n}`)).sort(),
    );
  });
});

describe('variants', () => {
  test('dead letters as objects: no dead-letter stream, an S3 metric, an expiry rule, the alarm on PUTs', () => {
    const { json, template } = synth(shoppingCartProps({ deadLetterDestination: 'objects', deadLetterExpirationDays: 30 }));
    const names = Object.values(resourcesOf(json, 'AWS::Kinesis::Stream')).map((r) => r.Properties.Name);
    assert.equal(names.length, 5);
    assert.ok(!names.includes(`${NAME}-dead-letters`));
    const env = workerEnvironment(json);
    assert.equal(env.STATEFUN_DEAD_LETTER_DESTINATION, 'objects');
    assert.equal(env.STATEFUN_DEAD_LETTER_STREAM, undefined);
    const [bucket] = Object.values(resourcesOf(json, 'AWS::S3::Bucket'));
    assert.deepEqual(bucket.Properties.MetricsConfigurations, [{ Id: 'dead-letters', Prefix: 'statefun/dead-letters/' }]);
    assert.deepEqual(bucket.Properties.LifecycleConfiguration.Rules[2], {
      Id: 'expire-dead-letters',
      Status: 'Enabled',
      Prefix: 'statefun/dead-letters/',
      ExpirationInDays: 30,
    });
    const dead = resolve(resourceWhere(json, 'AWS::CloudWatch::Alarm', 'AlarmName', `${NAME}-dead-letters`).resource.Properties);
    assert.equal(dead.Namespace, 'AWS/S3');
    assert.equal(dead.MetricName, 'PutRequests');
    assert.deepEqual(dead.Dimensions, [
      { Name: 'BucketName', Value: BUCKET },
      { Name: 'FilterId', Value: 'dead-letters' },
    ]);
    const s = roleStatements(json, `${NAME}-worker-task`, 'statefun-worker');
    assert.deepEqual(s.WriteOutputStreams.Resource, [`${NAME}-exchange`, 'cart-results', 'inventory-updates'].map(streamArn));
    template.resourceCountIs('AWS::Kinesis::Stream', 5);
  });

  test('a pinned environment, extra invoke ARNs, alarm actions, overrides of the worker environment', () => {
    const topic = `arn:aws:sns:${REGION}:${ACCOUNT}:statefun-alarms`;
    const extra = `arn:aws:lambda:${REGION}:${ACCOUNT}:function:elsewhere:live`;
    const { json } = synth(
      shoppingCartProps({ extraInvokeArns: [extra], alarmActions: [topic], workerEnvironment: { STATEFUN_LOG: 'debug', STATEFUN_INVOKE_ATTEMPTS: '5' }, partitions: 8, desiredCount: 2 }),
      { account: ACCOUNT, region: REGION },
    );
    const s = roleStatements(json, `${NAME}-worker-task`, 'statefun-worker');
    assert.deepEqual(s.InvokeFunctions.Resource, [ALIAS_ARN, extra]);
    for (const a of Object.values(resourcesOf(json, 'AWS::CloudWatch::Alarm'))) {
      assert.deepEqual(a.Properties.AlarmActions, [topic]);
      assert.deepEqual(a.Properties.OKActions, [topic]);
    }
    const env = workerEnvironment(json);
    assert.equal(env.STATEFUN_LOG, 'debug');
    assert.equal(env.STATEFUN_INVOKE_ATTEMPTS, '5');
    assert.equal(env.STATEFUN_PARTITIONS, '8');
    const exchange = resourceWhere(json, 'AWS::Kinesis::Stream', 'Name', `${NAME}-exchange`).resource;
    assert.equal(exchange.Properties.ShardCount, 8);
    const [service] = Object.values(resourcesOf(json, 'AWS::ECS::Service'));
    assert.equal(service.Properties.DesiredCount, 2);
  });

  test('ON_DEMAND streams keep the exchange provisioned; unencrypted streams; an empty checkpoint prefix; versioning', () => {
    const { json } = synth(shoppingCartProps({ streamMode: 'ON_DEMAND', streamEncryption: false, checkpointPrefix: '', bucketVersioning: true }));
    for (const r of Object.values(resourcesOf(json, 'AWS::Kinesis::Stream'))) {
      const p = r.Properties;
      assert.equal(p.StreamEncryption, undefined);
      if (p.Name === `${NAME}-exchange`) {
        assert.deepEqual([p.StreamModeDetails.StreamMode, p.ShardCount], ['PROVISIONED', 4]);
      } else {
        assert.deepEqual([p.StreamModeDetails.StreamMode, p.ShardCount], ['ON_DEMAND', undefined]);
      }
    }
    const s = roleStatements(json, `${NAME}-worker-task`, 'statefun-worker');
    assert.equal(s.ListCheckpoints.Condition, undefined);
    assert.deepEqual(s.CheckpointObjects.Resource, [`arn:${PARTITION}:s3:::${BUCKET}/*`]);
    const [bucket] = Object.values(resourcesOf(json, 'AWS::S3::Bucket'));
    assert.deepEqual(bucket.Properties.VersioningConfiguration, { Status: 'Enabled' });
    // Without a prefix the replaced-versions rule covers the whole bucket.
    assert.equal(bucket.Properties.LifecycleConfiguration.Rules[1].Prefix, undefined);
    assert.equal(workerEnvironment(json).STATEFUN_PREFIX, '');
  });

  test('an existing dead-letter stream is written to but not created; tags reach every resource', () => {
    const { json } = synth(shoppingCartProps({ createDeadLetterStream: false, deadLetterStreamName: 'shared-dead-letters', tags: { team: 'carts' } }));
    const names = Object.values(resourcesOf(json, 'AWS::Kinesis::Stream')).map((r) => r.Properties.Name);
    assert.ok(!names.includes('shared-dead-letters') && names.length === 5);
    assert.equal(workerEnvironment(json).STATEFUN_DEAD_LETTER_STREAM, 'shared-dead-letters');
    const s = roleStatements(json, `${NAME}-worker-task`, 'statefun-worker');
    assert.deepEqual(s.WriteOutputStreams.Resource.at(-1), streamArn('shared-dead-letters'));
    const dead = resourceWhere(json, 'AWS::CloudWatch::Alarm', 'AlarmName', `${NAME}-dead-letters`).resource;
    assert.deepEqual(dead.Properties.Dimensions, [{ Name: 'StreamName', Value: 'shared-dead-letters' }]);
    for (const type of ['AWS::Kinesis::Stream', 'AWS::DynamoDB::Table', 'AWS::S3::Bucket', 'AWS::Lambda::Function', 'AWS::ECS::Service', 'AWS::IAM::Role']) {
      for (const r of Object.values(resourcesOf(json, type))) {
        assert.ok(r.Properties.Tags.some((t: any) => t.Key === 'team' && t.Value === 'carts'), type);
      }
    }
  });

  test('a ContainerImage from an ECR repository brings its own, repository-scoped pull grant', () => {
    const app = testApp();
    const stack = new Stack(app, 'Test');
    const repository = ecr.Repository.fromRepositoryName(stack, 'Repo', 'statefun');
    new StatefunDeployment(stack, 'Statefun', shoppingCartProps({ image: ecs.ContainerImage.fromEcrRepository(repository, 'v1'), imageRepositoryArn: undefined }));
    const json = app.synth().getStackByName('Test').template;
    for (const { where, statement } of allStatements(json)) {
      for (const a of asList<string>(statement.Action).filter((x) => x.startsWith('ecr:') && x !== 'ecr:GetAuthorizationToken')) {
        assert.notDeepEqual(asList(resolve(statement.Resource)), ['*'], `${where}: ${a}`);
      }
    }
    // The task role is untouched by the image.
    const task = roleStatements(json, `${NAME}-worker-task`, 'statefun-worker');
    assert.equal(Object.keys(task).length, 6);
  });

  test('the Terraform module\'s validations', () => {
    const bad: [string, Parameters<typeof shoppingCartProps>[0], RegExp][] = [
      ['name', { name: 'Shopping_Cart' }, /name must be 3 to 32/],
      ['partitions', { partitions: 0 }, /partitions must be a whole number/],
      ['desiredCount', { desiredCount: 5 }, /desiredCount must not exceed partitions/],
      ['duplicate streams', { egressStreams: ['restock'] }, /must have different names/],
      ['target', { ingressStreams: { s: { valueType: 't', targets: ['no-namespace'] } } }, /needs at least one target/],
      ['extra invoke', { extraInvokeArns: ['arn:aws:lambda:eu-west-1:123456789012:function:*'] }, /qualified Lambda function ARNs/],
      ['prefix', { checkpointPrefix: 'statefun' }, /checkpointPrefix must be empty or end with/],
      ['function key', { functions: { 'a.b': { code: fakeArtifact(), functionTypes: ['a/*'] } } }, /Function keys are/],
      ['timeout', { functions: { f: { code: fakeArtifact(), functionTypes: ['a/*'], timeoutSeconds: 901 } } }, /timeoutSeconds must be between/],
      ['stuck seconds', { stuckPartitionSeconds: 10 }, /stuckPartitionSeconds must be a whole number, 30 or more/],
      ['no network', { vpcId: undefined, subnetIds: undefined }, /either vpc .* or vpcId/],
      ['no subnets', { subnetIds: [] }, /subnetIds must name at least one subnet/],
      ['retention', { logRetentionDays: 2 }, /log retention 2 days/],
    ];
    for (const [what, overrides, message] of bad) {
      assert.throws(() => synth(shoppingCartProps(overrides)), message, what);
    }
  });
});
