#!/usr/bin/env bash
# Makes keyscribe's synthetic test videos from FFmpeg's lavfi sources, with exact ground truth.
#
#   samples/make_samples.sh scenes OUT_DIR   the committed scene sample (scenes.mp4 + scenes.json)
#   samples/make_samples.sh test OUT_DIR     the files the decode tests use (made at test time)
#   samples/make_samples.sh bench OUT_DIR    60 s 720p and 1080p H.264 files for benchmarks
#   samples/make_samples.sh accuracy OUT_DIR a second scene video with ground truth
#                                            (transitions.mp4 + transitions.json)
#
# Every file is described in samples/README.md. Needs the ffmpeg CLI (Debian's build: libx264,
# libx265, libvpx, libaom, libfreetype).
set -euo pipefail

mode=${1:?usage: make_samples.sh scenes|test|bench OUT_DIR}
out=${2:?usage: make_samples.sh scenes|test|bench OUT_DIR}
mkdir -p "$out"
ff() { ffmpeg -nostdin -hide_banner -loglevel error -y "$@"; }

# A frame counter as a machine-readable barcode: the top 40 rows hold 16 blocks of 20 px,
# block b white when bit b of the source frame number N is set. The rest is mid grey with a
# horizontal ramp so that scaled frames are not uniform. Tests read N back from the pixels.
barcode() { # WIDTHxHEIGHT RATE SECONDS
  local size=$1 rate=$2 seconds=$3
  echo "color=c=black:s=${size}:r=${rate}:d=${seconds},format=yuv420p,geq=lum='if(lt(Y,40),255*mod(floor(N/pow(2,floor(X/20))),2),64+X/8)':cb=128:cr=128"
}

make_scenes() {
  # 30 s, 640x360, 30 fps. Timeline (seconds):
  #  0.00- 4.00 A testsrc2 | cut | 4.00- 8.00 B smptehdbars | cut |
  #  8.00-11.80 C mandelbrot, fading to black from 11.05 |
  # 11.80-16.80 D life, fading in from black until 12.55, a one-frame white flash at frame 68
  #             of D (14.0667 s) | 16.80-18.30 cross-dissolve D->E (midpoint 17.55) |
  # 18.30-22.00 E gradients | cut | 22.00-28.00 F slow pan (107 px/s) over one still picture |
  # cut | 28.00-30.00 G cellular automaton
  # Segment lengths are whole frames; life and the automaton run at 160x90 and are scaled up
  # with nearest-neighbour so that the file stays small.
  local size=640x360 rate=30
  ff -filter_complex "
    testsrc2=s=${size}:r=${rate},trim=end_frame=120,format=yuv420p,setsar=1[a];
    smptehdbars=s=${size}:r=${rate},trim=end_frame=120,format=yuv420p,setsar=1[b];
    mandelbrot=s=${size}:r=${rate},trim=end_frame=114,fade=t=out:st=3.05:d=0.75,format=yuv420p,setsar=1[c];
    life=s=160x90:r=${rate}:mold=10:ratio=0.3:seed=7:life_color=#40ff60:death_color=#802020,trim=end_frame=195,scale=640:360:flags=neighbor,
      fade=t=in:st=0:d=0.75,drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:enable='eq(n,68)',format=yuv420p,setsar=1[d];
    gradients=s=${size}:r=${rate}:seed=3:speed=0.01,trim=end_frame=156,format=yuv420p,setsar=1[e];
    [d][e]xfade=transition=fade:duration=1.5:offset=5.0[de];
    mandelbrot=s=1280x360:r=${rate}:start_scale=0.5,trim=end_frame=1,loop=loop=179:size=1,setpts=N/${rate}/TB,
      crop=w=640:h=360:x='min(640,t*107)':y=0,format=yuv420p,setsar=1[f];
    cellauto=s=160x90:r=${rate}:rule=30:seed=5,trim=end_frame=60,scale=640:360:flags=neighbor,format=yuv420p,setsar=1[g];
    [a][b][c][de][f][g]concat=n=6:v=1:a=0,
      drawtext=fontfile=/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf:text='%{pts\:hms}  #%{n}':x=10:y=h-34:fontsize=20:fontcolor=white:box=1:boxcolor=black@0.6[v]" \
    -map '[v]' -c:v libx264 -preset slow -crf 30 -g 60 -pix_fmt yuv420p -movflags +faststart "$out/scenes.mp4"
  cat > "$out/scenes.json" <<'JSON'
{
  "file": "scenes.mp4",
  "duration_s": 30.0,
  "fps": 30,
  "width": 640,
  "height": 360,
  "scenes": [
    {"start_s": 0.0, "end_s": 4.0, "content": "testsrc2 test pattern (moving)"},
    {"start_s": 4.0, "end_s": 8.0, "content": "SMPTE HD colour bars (still)"},
    {"start_s": 8.0, "end_s": 11.8, "content": "Mandelbrot zoom"},
    {"start_s": 11.8, "end_s": 17.55, "content": "Game of Life"},
    {"start_s": 17.55, "end_s": 22.0, "content": "moving colour gradients"},
    {"start_s": 22.0, "end_s": 28.0, "content": "slow pan over a still Mandelbrot picture"},
    {"start_s": 28.0, "end_s": 30.0, "content": "rule-30 cellular automaton"}
  ],
  "boundaries": [
    {"time_s": 4.0, "kind": "cut"},
    {"time_s": 8.0, "kind": "cut"},
    {"time_s": 11.8, "kind": "fade through black", "from_s": 11.05, "to_s": 12.55},
    {"time_s": 17.55, "kind": "cross-dissolve", "from_s": 16.8, "to_s": 18.3},
    {"time_s": 22.0, "kind": "cut"},
    {"time_s": 28.0, "kind": "cut"}
  ],
  "not_boundaries": [
    {"kind": "one-frame white flash", "time_s": 14.0667, "from_s": 14.0667, "to_s": 14.1},
    {"kind": "slow pan", "from_s": 22.0, "to_s": 28.0}
  ]
}
JSON
}

make_transitions() {
  # 24 s, 480x270, 25 fps. Shorter scenes and other transitions than scenes.mp4:
  #  0.00- 3.00 A rgbtestsrc | cut | 3.00- 6.00 B cellauto rule 110 (scrolling) |
  #  6.00- 8.00 dissolve B->C over 2 s (midpoint 7.00) | 8.00-11.02 C Mandelbrot, far zoom |
  # 11.02-11.52 fade to black, 11.52-12.02 fade in (a 1 s fade through black, black at 11.52) |
  # 11.52-16.00 D gradients with one-frame white flashes at 13.00 and 14.20 |
  # cut | 16.00-20.00 E yuvtestsrc shaken by up to 12 px every frame (hand-held camera) |
  # 20.00-20.48 dissolve E->F (midpoint 20.24) | 20.48-24.00 F life, large cells
  local size=480x270 rate=25
  ff -filter_complex "
    rgbtestsrc=s=${size}:r=${rate},trim=end_frame=75,format=yuv420p,setsar=1[a];
    cellauto=s=120x68:r=${rate}:rule=110:seed=9:scroll=1,trim=end_frame=125,scale=480:270:flags=neighbor,format=yuv420p,setsar=1[b];
    mandelbrot=s=${size}:r=${rate}:start_scale=0.02:start_x=-0.743643887037151:start_y=0.13182590420533,trim=end_frame=138,format=yuv420p,setsar=1[c];
    [b][c]xfade=transition=fade:duration=2:offset=3,fade=t=out:st=8.02:d=0.5[bc];
    gradients=s=${size}:r=${rate}:seed=11:speed=0.02:c0=0x2040ff:c1=0xffe020,trim=end_frame=112,
      fade=t=in:st=0:d=0.5,drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:enable='eq(n,37)+eq(n,67)',format=yuv420p,setsar=1[d];
    yuvtestsrc=s=504x294:r=${rate},crop=w=480:h=270:x='12+12*sin(n*1.7)':y='12+12*cos(n*2.3)',trim=end_frame=112,format=yuv420p,setsar=1[e];
    life=s=120x68:r=${rate}:mold=20:ratio=0.2:seed=13:life_color=#ffcc00:death_color=#003060,trim=end_frame=100,scale=480:270:flags=neighbor,format=yuv420p,setsar=1[f];
    [e][f]xfade=transition=fade:duration=0.48:offset=4[ef];
    [a][bc][d][ef]concat=n=4:v=1:a=0[v]" \
    -map '[v]' -c:v libx264 -preset slow -crf 30 -g 50 -pix_fmt yuv420p -movflags +faststart "$out/transitions.mp4"
  cat > "$out/transitions.json" <<'JSON'
{
  "file": "transitions.mp4",
  "duration_s": 24.0,
  "fps": 25,
  "width": 480,
  "height": 270,
  "scenes": [
    {"start_s": 0.0, "end_s": 3.0, "content": "RGB test pattern"},
    {"start_s": 3.0, "end_s": 7.0, "content": "scrolling rule-110 automaton"},
    {"start_s": 7.0, "end_s": 11.52, "content": "deep Mandelbrot zoom"},
    {"start_s": 11.52, "end_s": 16.0, "content": "moving blue-yellow gradients"},
    {"start_s": 16.0, "end_s": 20.24, "content": "YUV test pattern, hand-held shake"},
    {"start_s": 20.24, "end_s": 24.0, "content": "Game of Life, large cells"}
  ],
  "boundaries": [
    {"time_s": 3.0, "kind": "cut"},
    {"time_s": 7.0, "kind": "cross-dissolve", "from_s": 6.0, "to_s": 8.0},
    {"time_s": 11.52, "kind": "fade through black", "from_s": 11.02, "to_s": 12.02},
    {"time_s": 16.0, "kind": "cut"},
    {"time_s": 20.24, "kind": "cross-dissolve", "from_s": 20.0, "to_s": 20.48}
  ],
  "not_boundaries": [
    {"kind": "one-frame white flash", "time_s": 13.0, "from_s": 13.0, "to_s": 13.04},
    {"kind": "one-frame white flash", "time_s": 14.2, "from_s": 14.2, "to_s": 14.24},
    {"kind": "hand-held shake", "from_s": 16.0, "to_s": 20.0}
  ]
}
JSON
}

make_test_set() {
  local size=320x240
  # counter.mp4: 12 s at 25 fps, a key frame every 2 s, B-frames: for seeking and counts.
  ff -f lavfi -i "$(barcode $size 25 12)" -c:v libx264 -crf 12 -g 50 -keyint_min 50 \
     -sc_threshold 0 -bf 2 -pix_fmt yuv420p "$out/counter.mp4"
  # vfr.mp4: a 60 fps counter thinned to 30 fps for 0-2 s, 5 fps for 2-4 s, 60 fps for 4-6 s;
  # timestamps stay those of the source, so frame N is shown at N/60 s.
  ff -f lavfi -i "$(barcode $size 60 6)" \
     -vf "select='if(lt(t,2),not(mod(n,2)),if(lt(t,4),not(mod(n,12)),1))'" \
     -fps_mode passthrough -c:v libx264 -crf 12 -pix_fmt yuv420p -video_track_timescale 600 "$out/vfr.mp4"
  # delayed.mp4: the counter, its first frame at pts 1.075 s.
  ff -i "$out/counter.mp4" -c copy -output_ts_offset 1.075 "$out/delayed.mp4"
  # delayed.ts: MPEG-TS, whose timestamps start at 1.4 s by default.
  ff -i "$out/counter.mp4" -c copy -f mpegts "$out/delayed.ts"
  # rotated.mp4: stored 320x240 landscape, shown rotated 90 degrees clockwise (portrait).
  ff -i "$out/counter.mp4" -c copy -metadata:s:v:0 rotate=270 "$out/rotated.mp4"
  # Other containers and codecs, 2 s each, 25 fps.
  ff -f lavfi -i "$(barcode $size 25 2)" -c:v libx264 -crf 18 "$out/h264.mkv"
  ff -f lavfi -i "$(barcode $size 25 2)" -c:v libx264 -crf 18 "$out/h264.mov"
  ff -f lavfi -i "$(barcode $size 25 2)" -c:v libvpx-vp9 -b:v 400k -deadline realtime -cpu-used 8 "$out/vp9.webm"
  ff -f lavfi -i "$(barcode $size 25 2)" -c:v mpeg4 -q:v 3 "$out/mpeg4.avi"
  ff -f lavfi -i "$(barcode $size 25 2)" -c:v libx265 -crf 20 -x265-params log-level=none "$out/hevc.mp4"
  ff -f lavfi -i "$(barcode $size 25 2)" -c:v libaom-av1 -crf 40 -cpu-used 8 -row-mt 1 "$out/av1.mkv"
  # Bad inputs.
  ff -f lavfi -i "sine=frequency=440:duration=2" -c:a aac "$out/audio-only.m4a"
  printf 'this is a text file, not a video\n' > "$out/notes.txt"
  : > "$out/empty.mp4"
  ff -f lavfi -i "$(barcode $size 25 8)" -c:v libx264 -crf 12 -g 25 -movflags +faststart "$out/whole.mp4"
  head -c "$(( $(stat -c %s "$out/whole.mp4") / 2 ))" "$out/whole.mp4" > "$out/truncated.mp4"
  rm "$out/whole.mp4"
}

make_bench_set() {
  for spec in "720p 1280x720" "1080p 1920x1080"; do
    set -- $spec
    ff -f lavfi -i "testsrc2=s=$2:r=30000/1001:d=60,format=yuv420p" \
       -c:v libx264 -preset veryfast -crf 23 -g 250 -pix_fmt yuv420p "$out/bench-$1.mp4"
  done
}

case "$mode" in
  scenes) make_scenes ;;
  test) make_test_set ;;
  bench) make_bench_set ;;
  accuracy) make_transitions ;;
  *) echo "unknown mode $mode (scenes, test, bench or accuracy)" >&2; exit 2 ;;
esac
