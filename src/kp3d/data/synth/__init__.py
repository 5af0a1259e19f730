"""kp3d.data.synth"""
