"""KPL aggregation with aws-kinesis-agg, AWS's own Python library of the format.

    kpl.py aggregate RECORDS_IN AGGREGATED_OUT [MAX_PER_RECORD]
        RECORDS_IN: one JSON object per line, {"key": partition key, "data": base64}.
        AGGREGATED_OUT: the aggregated Kinesis records the library made, one JSON
        object per line, {"key", "hash_key", "data": base64}, in order.
    kpl.py deaggregate AGGREGATED_IN USER_RECORDS_OUT
        Reads Kinesis records as written above and writes the user records the
        library finds in them, {"key", "data": base64, "sub": sub-sequence}.
"""

import base64
import json
import sys

from aws_kinesis_agg.aggregator import RecordAggregator
from aws_kinesis_agg.deaggregator import deaggregate_records


def aggregate(records_in, aggregated_out, max_per_record):
    aggregator = RecordAggregator()
    out = []

    def emit(record):
        if record is not None and record.get_num_user_records() > 0:
            key, hash_key, data = record.get_contents()
            out.append({"key": key, "hash_key": hash_key, "data": base64.b64encode(data).decode()})

    with open(records_in) as lines:
        for line in lines:
            record = json.loads(line)
            emit(aggregator.add_user_record(record["key"], base64.b64decode(record["data"])))
            if aggregator.get_num_user_records() >= max_per_record:
                emit(aggregator.clear_and_get())
    emit(aggregator.clear_and_get())
    with open(aggregated_out, "w") as file:
        for record in out:
            file.write(json.dumps(record) + "\n")


def deaggregate(aggregated_in, user_records_out):
    with open(aggregated_in) as lines:
        records = [json.loads(line) for line in lines if line.strip()]
    # As Lambda hands Kinesis records to a function, which is what the library reads.
    kinesis = [
        {
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": r["key"],
                "data": r["data"],
                "sequenceNumber": str(n),
                "approximateArrivalTimestamp": 0,
            }
        }
        for n, r in enumerate(records)
    ]
    with open(user_records_out, "w") as file:
        for user in deaggregate_records(kinesis):
            k = user["kinesis"]
            sub = k.get("subSequenceNumber")
            data = k["data"].decode() if isinstance(k["data"], bytes) else k["data"]
            file.write(json.dumps({"key": k["partitionKey"], "data": data, "sub": sub}) + "\n")


if __name__ == "__main__":
    if sys.argv[1] == "aggregate":
        aggregate(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 1 << 30)
    elif sys.argv[1] == "deaggregate":
        deaggregate(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: kpl.py aggregate|deaggregate IN OUT")
