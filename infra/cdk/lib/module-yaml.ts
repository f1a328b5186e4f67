// The workers' module.yaml, generated from the deployment's functions, ingress streams and egresses
// in exactly the text Terraform's main.tf produces (one yamlencode per document, joined by "---\n"),
// so that the two deployments hand the runtime byte-identical files for the same inputs.
//
// Strings may hold CDK tokens (the alias ARNs name the stack's partition, region and account); the
// emitter quotes them as they are, and CloudFormation fills them in (an Fn::Join) without adding a
// quote or a backslash, as none of those values can contain one.

/** A YAML value as Terraform's yamlencode takes it: maps, lists, strings, numbers and booleans. */
export type YamlValue = string | number | boolean | YamlValue[] | { [key: string]: YamlValue };

/** One function of the deployment as its module.yaml endpoint documents need it. */
export interface ModuleFunction {
  /** Function-type patterns the function serves, e.g. "shoppingcart/*". */
  readonly functionTypes: string[];
  /** The qualified ARN (alias) the runtime invokes. */
  readonly aliasArn: string;
  readonly maxBatch: number;
  readonly timeoutSeconds: number;
}

export interface ModuleYamlInput {
  /** Functions by key; documents follow the keys' byte order, as Terraform iterates a map. */
  readonly functions: Record<string, ModuleFunction>;
  /** Ingress streams by name; listed in the names' byte order, as Terraform iterates a map. */
  readonly ingressStreams: Record<string, { readonly valueType: string; readonly targets: string[] }>;
  readonly ingressId: string;
  readonly ingressStartupPosition: string;
  readonly egressIds: string[];
  /** More documents appended as given (a leading "---" is dropped), as Terraform's extra_module_documents. */
  readonly extraDocuments?: string;
}

// The largest payload the Lambda Invoke API takes (6 MiB), as Terraform's main.tf sets it.
const LAMBDA_PAYLOAD_MAX_BYTES = 6291456;

// Terraform iterates maps in the byte order of their keys; JavaScript's default sort compares
// UTF-16 code units, which agrees for the ASCII names the props validation admits.
function sortedKeys(o: object): string[] {
  return Object.keys(o).sort();
}

/** The module.yaml documents, in Terraform's order: endpoints, then the ingress, then the egresses. */
export function moduleDocuments(input: ModuleYamlInput): YamlValue[] {
  const docs: YamlValue[] = [];
  for (const key of sortedKeys(input.functions)) {
    const f = input.functions[key];
    for (const t of f.functionTypes) {
      docs.push({
        kind: 'statefun-aws.endpoints.v1/lambda',
        spec: {
          functions: t,
          functionName: f.aliasArn,
          maxNumBatchRequests: f.maxBatch,
          // The runtime gives up on an attempt a little after Lambda would have.
          transport: { call: `${f.timeoutSeconds + 5}s`, payload_max_bytes: LAMBDA_PAYLOAD_MAX_BYTES },
        },
      });
    }
  }
  const streams = sortedKeys(input.ingressStreams);
  if (streams.length > 0) {
    docs.push({
      kind: 'io.statefun.kinesis.v1/ingress',
      spec: {
        id: input.ingressId,
        awsRegion: { type: 'default' },
        startupPosition: { type: input.ingressStartupPosition },
        streams: streams.map((s) => ({
          stream: s,
          valueType: input.ingressStreams[s].valueType,
          targets: [...input.ingressStreams[s].targets],
        })),
      },
    });
  }
  for (const id of input.egressIds) {
    docs.push({ kind: 'io.statefun.kinesis.v1/egress', spec: { id, awsRegion: { type: 'default' } } });
  }
  return docs;
}

/** The whole module.yaml text, as Terraform's local.module_yaml. */
export function moduleYaml(input: ModuleYamlInput): string {
  const parts = moduleDocuments(input).map(yamlEncode);
  const extra = trimDocumentMarker(input.extraDocuments ?? '');
  if (extra !== '') {
    parts.push(`${extra}\n`);
  }
  return parts.join('---\n');
}

// trimspace(trimprefix(trimspace(s), "---")), as main.tf does.
function trimDocumentMarker(s: string): string {
  let t = s.trim();
  if (t.startsWith('---')) {
    t = t.slice(3);
  }
  return t.trim();
}

/**
 * One document in the layout of Terraform's yamlencode: every key and string double-quoted, map keys
 * sorted, list items ("- ") at the indentation of their parent key, two spaces per level, a final
 * newline. Strings are quoted as JSON quotes them, which YAML reads back the same.
 */
export function yamlEncode(value: YamlValue): string {
  return `${encodeLines(value, 0).join('\n')}\n`;
}

function isScalarOrEmpty(v: YamlValue): boolean {
  if (Array.isArray(v)) return v.length === 0;
  if (typeof v === 'object') return Object.keys(v).length === 0;
  return true;
}

function scalar(v: YamlValue): string {
  if (Array.isArray(v)) return '[]';
  if (typeof v === 'object') return '{}';
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' && !Number.isFinite(v)) throw new Error(`module.yaml: ${v} is not a number YAML can hold`);
  return String(v);
}

function encodeLines(value: YamlValue, indent: number): string[] {
  const pad = ' '.repeat(indent);
  if (isScalarOrEmpty(value)) {
    return [`${pad}${scalar(value)}`];
  }
  if (Array.isArray(value)) {
    // Each item is laid out two deeper, then its first line takes the "- " in place of its indent.
    return value.flatMap((item) => {
      const lines = encodeLines(item, indent + 2);
      lines[0] = `${pad}- ${lines[0].slice(indent + 2)}`;
      return lines;
    });
  }
  const map = value as { [key: string]: YamlValue };
  return sortedKeys(map).flatMap((k) => {
    const v = map[k];
    const key = `${pad}${JSON.stringify(k)}:`;
    if (isScalarOrEmpty(v)) return [`${key} ${scalar(v)}`];
    // A list sits at its key's indentation, a map one level deeper.
    return [key, ...encodeLines(v, Array.isArray(v) ? indent : indent + 2)];
  });
}
