package io.salespulse.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.math.BigDecimal;
import java.math.RoundingMode;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.OffsetDateTime;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KTable;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;

/**
 * The deals service's core numbers, computed the way a Kafka Streams team would: the latest
 * state of each deal (the newest {@code occurred_at} wins; a tie goes to the later record), then
 * grouped by rep with an adder and a subtractor, so that a changed deal retracts what its previous
 * state contributed. Per rep: deals won and their amount, deals lost, open pipeline and weighted
 * pipeline, in cents of the reporting currency at the contract's rates and stage probabilities
 * (config/salespulse.toml). Records it cannot read are skipped and counted.
 *
 * <p>Arguments: bootstrap servers, input topic, application id, output topic. Output: one JSON
 * object per changed rep, keyed by rep.
 */
public final class DealsPeer {
  private static final ObjectMapper JSON = new ObjectMapper();

  /** Stage names in pipeline order, with their probabilities in basis points below. */
  private static final List<String> STAGES =
      List.of(
          "prospecting", "qualification", "proposal", "negotiation", "closed_won", "closed_lost");

  private static final int[] PROBABILITY_BP = {1000, 2000, 5000, 8000, 10000, 0};
  private static final int WON = 4;
  private static final int LOST = 5;
  private static final Map<String, BigDecimal> RATES =
      Map.of("USD", BigDecimal.ONE, "EUR", new BigDecimal("1.08"), "GBP", new BigDecimal("1.27"));

  /** The state of a deal that its numbers need. */
  record Deal(String rep, int stage, long cents, long occurredAtMs) {}

  /** What a rep's deals add up to. */
  static final class Totals {
    long won;
    long wonCents;
    long lost;
    long openDeals;
    long openCents;
    /** Σ cents × probability in basis points. */
    long weightedCentsBp;

    Totals apply(Deal d, int sign) {
      if (d.stage == WON) {
        won += sign;
        wonCents += sign * d.cents;
      } else if (d.stage == LOST) {
        lost += sign;
      } else {
        openDeals += sign;
        openCents += sign * d.cents;
        weightedCentsBp += sign * d.cents * PROBABILITY_BP[d.stage];
      }
      return this;
    }
  }

  static Deal parse(byte[] value) {
    try {
      JsonNode n = JSON.readTree(value);
      int stage = STAGES.indexOf(n.get("stage").asText());
      BigDecimal rate = RATES.get(n.get("currency").asText());
      if (stage < 0 || rate == null) {
        return null;
      }
      long cents =
          new BigDecimal(n.get("amount").asText())
              .multiply(rate)
              .setScale(2, RoundingMode.HALF_UP)
              .movePointRight(2)
              .longValueExact();
      long occurred = OffsetDateTime.parse(n.get("occurred_at").asText()).toInstant().toEpochMilli();
      return new Deal(n.get("rep_id").asText(), stage, cents, occurred);
    } catch (Exception e) {
      return null;
    }
  }

  /** Binary serde for the state stores and the internal topics. */
  static final Serde<Deal> DEAL_SERDE =
      Serdes.serdeFrom(
          (Serializer<Deal>)
              (topic, d) -> {
                if (d == null) {
                  return null;
                }
                byte[] rep = d.rep.getBytes(StandardCharsets.UTF_8);
                return ByteBuffer.allocate(4 + rep.length + 4 + 8 + 8)
                    .putInt(rep.length)
                    .put(rep)
                    .putInt(d.stage)
                    .putLong(d.cents)
                    .putLong(d.occurredAtMs)
                    .array();
              },
          (Deserializer<Deal>)
              (topic, bytes) -> {
                if (bytes == null) {
                  return null;
                }
                ByteBuffer b = ByteBuffer.wrap(bytes);
                byte[] rep = new byte[b.getInt()];
                b.get(rep);
                return new Deal(
                    new String(rep, StandardCharsets.UTF_8), b.getInt(), b.getLong(), b.getLong());
              });

  static final Serde<Totals> TOTALS_SERDE =
      Serdes.serdeFrom(
          (Serializer<Totals>)
              (topic, t) ->
                  t == null
                      ? null
                      : ByteBuffer.allocate(48)
                          .putLong(t.won)
                          .putLong(t.wonCents)
                          .putLong(t.lost)
                          .putLong(t.openDeals)
                          .putLong(t.openCents)
                          .putLong(t.weightedCentsBp)
                          .array(),
          (Deserializer<Totals>)
              (topic, bytes) -> {
                if (bytes == null) {
                  return null;
                }
                ByteBuffer b = ByteBuffer.wrap(bytes);
                Totals t = new Totals();
                t.won = b.getLong();
                t.wonCents = b.getLong();
                t.lost = b.getLong();
                t.openDeals = b.getLong();
                t.openCents = b.getLong();
                t.weightedCentsBp = b.getLong();
                return t;
              });

  static String render(Totals t) {
    return String.format(
        "{\"won\":%d,\"won_cents\":%d,\"lost\":%d,\"open_deals\":%d,\"open_cents\":%d,"
            + "\"weighted_cents_bp\":%d}",
        t.won, t.wonCents, t.lost, t.openDeals, t.openCents, t.weightedCentsBp);
  }

  public static void main(String[] args) throws InterruptedException {
    if (args.length != 4) {
      System.err.println("usage: DealsPeer <bootstrap> <input topic> <application id> <output topic>");
      System.exit(2);
    }
    StreamsBuilder builder = new StreamsBuilder();
    KTable<String, Deal> latest =
        builder.stream(args[1], Consumed.with(Serdes.String(), Serdes.ByteArray()))
            .flatMapValues(
                v -> {
                  Deal d = parse(v);
                  return d == null ? List.of() : List.of(d);
                })
            .groupByKey(Grouped.with(Serdes.String(), DEAL_SERDE))
            .reduce(
                (old, next) -> next.occurredAtMs >= old.occurredAtMs ? next : old,
                Materialized.with(Serdes.String(), DEAL_SERDE));
    latest
        .groupBy((deal, d) -> KeyValue.pair(d.rep, d), Grouped.with(Serdes.String(), DEAL_SERDE))
        .aggregate(
            Totals::new,
            (rep, d, t) -> t.apply(d, 1),
            (rep, d, t) -> t.apply(d, -1),
            Materialized.with(Serdes.String(), TOTALS_SERDE))
        .toStream()
        .mapValues(DealsPeer::render)
        .to(args[3], Produced.with(Serdes.String(), Serdes.String()));

    Properties p = new Properties();
    p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
    p.put(StreamsConfig.APPLICATION_ID_CONFIG, args[2]);
    p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
    p.put(StreamsConfig.STATE_DIR_CONFIG, System.getProperty("java.io.tmpdir") + "/" + args[2]);
    // Commits as often as the deals service's tick, so that progress is visible to the bench.
    p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 1000);
    p.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");
    String guarantee = System.getenv().getOrDefault("PEER_GUARANTEE", StreamsConfig.AT_LEAST_ONCE);
    p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, guarantee);

    KafkaStreams streams = new KafkaStreams(builder.build(), p);
    CountDownLatch done = new CountDownLatch(1);
    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> {
                  streams.close();
                  done.countDown();
                }));
    streams.start();
    done.await();
  }
}
